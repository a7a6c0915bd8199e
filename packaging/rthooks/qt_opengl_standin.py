"""Run-time hook (build.spec): stand-ins for PySide6.QtOpenGL and QtOpenGLWidgets.

The bundles leave both out (QtOpenGL alone is 9 MB), but pyqtgraph 0.14 imports them as it
loads its curve items, so the loss chart would fail to build with "No module named
'PySide6.QtOpenGL'". pyqtgraph touches them only to draw into an OpenGL widget, which the chart
never asks for (it draws with QPainter), so empty modules are enough. The finder is consulted
last: a build that carries the real modules loads those.
"""

import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

_STAND_INS = frozenset({"PySide6.QtOpenGL", "PySide6.QtOpenGLWidgets"})


class QOpenGLWidget:
    """What pyqtgraph's GL view subclasses; it is never made in this app."""

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        raise ImportError("OpenGL drawing is not part of this build of Model Training Manager")


def _missing(name: str) -> object:
    raise AttributeError(f"{name} is not part of this build's stand-in for Qt's OpenGL modules")


class _OpenGLStandIns:
    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        return ModuleSpec(name, self) if name in _STAND_INS else None

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: ModuleType) -> None:
        module.QOpenGLWidget = QOpenGLWidget
        module.__getattr__ = _missing


sys.meta_path.append(_OpenGLStandIns())
