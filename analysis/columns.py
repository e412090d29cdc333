"""The results table's columns: their names, which define a run, which are numbers, and in which
order runs are resampled. One place that every reader (table, ledger, MLflow) and fit takes them from."""

#: The column naming a run's model family (aunet2, transformer_bpe, ...): the one place that spells it.
FAMILY = "family"
#: Other spellings of that column accepted on input (external tables, records before or after the rename).
FAMILY_ALIASES = ("family", "arch")
#: Columns that may hold a run's status, matched in any case: ours, and the ``state`` of W&B exports
#: ("State" in its CSV). A table with several must agree run by run: which one is meant is never guessed.
STATUS_ALIASES = ("status", "state")
REQUIRED = ("status", FAMILY, "budget", "lr", "bsz", "loss", "units")
#: A run's hyperparameters. A table without both serves the allocation fits alone (``analysis.load.allocation_only``).
HYPERPARAMETERS = ("lr", "bsz")
#: What such a table needs instead: each run's model size, with its data (``train_units``, or ``tokens``; derived
#: from the compute where it has neither).
ALLOCATION_REQUIRED = ("status", FAMILY, "budget", "params", "loss", "units")
UNITS = ("bytes", "tokens")
#: Columns that, with the family and the budget, define which runs belong together: several model
#: sizes or data ratios at one compute are separate groups (an explicit ``group`` column overrides them).
RUN_DEFINING = ("ratio", "model", "params")
#: Identity of a run: two rows equal in all of these (that the table has) are the same run twice.
RUN_IDENTITY = ("study", FAMILY, "budget", "group", "lr", "bsz", "seed", "trial")
#: The order runs are resampled in (:func:`canonical`), so that the same runs give the same bootstrap
#: draws whichever source (CSV, Parquet, ledger, MLflow) and row order they came from.
CANONICAL_ORDER = (FAMILY, "budget", "group", "lr", "bsz", "seed", "trial", "loss", "status", "study")
#: The columns that split a table into the sets of runs one optimum is read from.
GROUP_KEYS = [FAMILY, "budget", "group"]
NUMERIC = ("budget", "lr", "bsz", "bytes_per_unit", "ratio", "flops_per_unit", "flops", "paper_compute",
           "executed_flops", "params", "steps",
           "train_units", "loss", "bpb", "lr_min", "lr_max", "bsz_min", "bsz_max", "bsz_bytes", "trial", "seed",
           "seq_len", "vocab_size")
POSITIVE = ("budget", "lr", "bsz")
#: ``eval_`` columns that are evaluation bookkeeping (record.metrics), not downstream task scores.
NOT_TASKS = ("eval_units", "eval_bytes", "eval_loss", "eval_bpb")

#: Compute from a model size N and a number of training tokens D: C = FLOPS_PER_PARAM_TOKEN · N · D
#: (the usual 6·N·D: forward and backward pass of a dense model, attention left out).
FLOPS_PER_PARAM_TOKEN = 6.0
