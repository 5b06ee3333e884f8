"""Results files: the typed, versioned schema (:mod:`.schema`), reading older versions (:mod:`.upgrade`),
atomic writes point by point and loading into pandas (:mod:`.io`)."""

from tpsbench.results.io import (
    ResultsError,
    ResultsWriter,
    atomic_write_json,
    default_path,
    finite,
    load_dataframe,
    load_results,
    utc_now,
)
from tpsbench.results.schema import POINT_STATUSES, SCHEMA, RunDoc
from tpsbench.results.typed import SchemaError, from_dict, to_dict

__all__ = ["POINT_STATUSES", "SCHEMA", "ResultsError", "ResultsWriter", "RunDoc", "SchemaError", "atomic_write_json",
           "default_path", "finite", "from_dict", "load_dataframe", "load_results", "to_dict", "utc_now"]
