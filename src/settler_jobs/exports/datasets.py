"""What can be exported: a registry of datasets, each a tenant-scoped query with filters.

A `Dataset` (see `exports.definition`) names its columns, tenant column, order and
filters model. The built-in ones (`exports.builtin_datasets`: audit log, job history,
dead letters, webhook deliveries, reconciliation results) are registered on import.

More join with `register_dataset`.
"""

from __future__ import annotations

from settler_jobs.errors import InvalidJob
from settler_jobs.exports import builtin_datasets
from settler_jobs.exports.definition import MAX_FILTERS_BYTES, Dataset, Filters

__all__ = [
    "MAX_FILTERS_BYTES",
    "Dataset",
    "Filters",
    "dataset_names",
    "get_dataset",
    "register_dataset",
]

_REGISTRY: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset) -> None:
    """Make a dataset exportable; a name registers once."""
    if dataset.name in _REGISTRY:
        raise ValueError(f"dataset {dataset.name!r} is already registered")
    _REGISTRY[dataset.name] = dataset


def get_dataset(name: str) -> Dataset:
    """The dataset called `name`; InvalidJob listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise InvalidJob(f"unknown dataset {name!r}; known datasets: {known}") from None


def dataset_names() -> list[str]:
    """Every registered dataset name, sorted."""
    return sorted(_REGISTRY)


for _dataset in [*builtin_datasets.tables(), *builtin_datasets.reconciliation()]:
    register_dataset(_dataset)
