"""An import-linter contract for sub-modules of an external package.

import-linter only sees external packages at their top level (`PySide6`), but the rule here is
finer: the core may use `PySide6.QtCore` and must never touch `PySide6.QtWidgets` or
`PySide6.QtGui`. This contract reads each direct import's own line to tell them apart.
"""

from __future__ import annotations

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


class ForbiddenSubmoduleContract(Contract):
    """Source modules (and their descendants) must not import the listed dotted sub-modules."""

    source_modules = fields.ListField(subfield=fields.ModuleField())
    forbidden_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        violations = []
        for source in self.source_modules:  # type: ignore[attr-defined]
            importers = {source.name} | graph.find_descendants(source.name)
            for importer in sorted(importers):
                violations.extend(self._violations_in(graph, importer))
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def _violations_in(self, graph: ImportGraph, importer: str) -> list[str]:
        found = []
        for forbidden in self.forbidden_modules:  # type: ignore[attr-defined]
            top = forbidden.split(".")[0]
            if top not in graph.find_modules_directly_imported_by(importer):
                continue
            for detail in graph.get_import_details(importer=importer, imported=top):
                if _names(detail["line_contents"], forbidden):
                    found.append(f"{importer}:{detail['line_number']} {detail['line_contents']}")
        return found

    def render_broken_contract(self, check: ContractCheck) -> None:
        for violation in check.metadata["violations"]:
            output.print_error(violation, bold=False)
            output.new_line()


def _names(line: str, module: str) -> bool:
    """Whether an import line names `module` (`from X import`, `import X`, `from X.Y import`)."""
    words = line.replace(",", " ").split()
    return any(word == module or word.startswith(module + ".") for word in words)
