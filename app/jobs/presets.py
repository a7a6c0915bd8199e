"""Starting points for a new job's hyperparameters: Quick test, Balanced and Thorough.

A preset sets only the fields that decide how long and how hard a run trains; the method, the
seed and the validation split stay the user's (or the dataset's). Every value stays editable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.settings import Method

# Full fine-tuning moves every weight, so it wants a learning rate about ten times smaller.
_FULL_LEARNING_RATE_FACTOR = 0.1


@dataclass(frozen=True)
class Preset:
    """A named set of hyperparameters (keys of app.jobs.spec.TrainingHyperparameters)."""

    name: str
    description: str
    values: dict[str, Any] = field(default_factory=dict)

    def values_for(self, method: Method) -> dict[str, Any]:
        """The preset's values, with the learning rate scaled down for full fine-tuning."""
        values = dict(self.values)
        if method == "full":
            scaled = values["learning_rate"] * _FULL_LEARNING_RATE_FACTOR
            values["learning_rate"] = float(f"{scaled:.6g}")  # 2e-05, not 2.0000000000000003e-05
        return values


QUICK_TEST = Preset(
    "Quick test",
    "A few dozen steps on short sequences, to check that the dataset and the model work "
    "together before a long run. The result is not meant to be good.",
    {
        "epochs": 1,
        "max_steps": 30,
        "batch_size": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": 2e-4,
        "max_seq_length": 512,
        "warmup_ratio": 0.0,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "eval_steps": 10,
        "save_steps": 10,
    },
)
BALANCED = Preset(
    "Balanced",
    "Three passes over the data at the usual LoRA settings: a good first real run.",
    {
        "epochs": 3,
        "max_steps": None,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": 2e-4,
        "max_seq_length": 1024,
        "warmup_ratio": 0.03,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "eval_steps": 100,
        "save_steps": 100,
    },
)
THOROUGH = Preset(
    "Thorough",
    "Five passes, longer sequences and a larger adapter at a gentler learning rate: slower, "
    "and it needs more memory, but it learns more from a good dataset.",
    {
        "epochs": 5,
        "max_steps": None,
        "batch_size": 8,
        "gradient_accumulation_steps": 2,
        "learning_rate": 1e-4,
        "max_seq_length": 2048,
        "warmup_ratio": 0.05,
        "lora_r": 64,
        "lora_alpha": 128,
        "lora_dropout": 0.1,
        "eval_steps": 100,
        "save_steps": 200,
    },
)
PRESETS: tuple[Preset, ...] = (QUICK_TEST, BALANCED, THOROUGH)


def preset_named(name: str) -> Preset:
    """The preset called `name`; KeyError for a name that is not one."""
    for preset in PRESETS:
        if preset.name == name:
            return preset
    raise KeyError(name)


def matching_preset(values: dict[str, Any], method: Method) -> Preset | None:
    """The preset whose every value `values` has, or None when the values are custom."""
    for preset in PRESETS:
        wanted = preset.values_for(method)
        if all(_same(values.get(key), value) for key, value in wanted.items()):
            return preset
    return None


def _same(given: Any, wanted: Any) -> bool:
    if isinstance(given, float) or isinstance(wanted, float):
        try:
            return abs(float(given) - float(wanted)) <= 1e-12 * max(1.0, abs(float(wanted)))
        except (TypeError, ValueError):
            return False
    return bool(given == wanted)
