"""Train GRADIEND models with pre-pruning and post-pruning.

Quick start (any torch model; ``loss_fn(model, batch, which)`` scores each example of ``batch``
against its ``factual`` or ``alternative`` target)::

    from gradiend_core.trainer import Example, PrePruneConfig, PostPruneConfig, TrainingArguments, Trainer

    args = TrainingArguments(
        experiment_dir="runs/number",
        learning_rate=1e-3, max_steps=300, train_batch_size=8, eval_steps=50,
        pre_prune_config=PrePruneConfig(n_samples=16, topk=0.1),
        post_prune_config=PostPruneConfig(topk=0.05, part="decoder-weight"),
    )
    trainer = Trainer(base_model, train_examples, loss_fn, args=args)
    trainer.train()                      # writes runs/number/model/
    model = trainer.get_model()          # ModelWithGradiend

Hugging Face masked LMs: ``Trainer.for_masked_lm("path/to/model", examples, args=args)`` (needs
``transformers``).
"""

from ..analysis.cut_cost import CutCost, class_separation, cut_cost
from ..checkpoint.files import PRE_PRUNE_FILE, VALIDATION_FILE
from ..checkpoint.records import PrePruneRecord, ValidationRecord, load_pre_prune_record, load_validation_record
from ..gradients.data import Example
from .config import PostPruneConfig, PrePruneConfig, TrainingArguments, validate_selection
from .model_with_gradiend import ModelWithGradiend
from .trainer import Trainer

__all__ = [
    "CutCost",
    "Example",
    "ModelWithGradiend",
    "PRE_PRUNE_FILE",
    "PostPruneConfig",
    "PrePruneConfig",
    "PrePruneRecord",
    "Trainer",
    "TrainingArguments",
    "VALIDATION_FILE",
    "ValidationRecord",
    "class_separation",
    "cut_cost",
    "load_pre_prune_record",
    "load_validation_record",
    "validate_selection",
]
