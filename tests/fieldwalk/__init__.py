"""Walk every field of every policy model and change each one in a real policy (tests/test_every_field.py).

- `fields()` (fields.py): every field reachable from the document kinds, from the models themselves;
- `load_base()`, `locations()` (places.py): base policies built once, and where a field's model occurs in them;
- `candidates()` (values.py): other valid values derived from the field's type;
- `judge()` (trials.py): rebuild in memory with each candidate and compare every file of the build.
"""

from fieldwalk.fields import ADAPTER, DOCUMENT_KINDS, FieldSpec, fields
from fieldwalk.places import Base, Location, build_files, load_base, locations, sparse
from fieldwalk.trials import Trial, Verdict, judge, mutated, revalidate, trial
from fieldwalk.values import Candidate, Pool, candidates, rename_everywhere

__all__ = [
    "ADAPTER",
    "DOCUMENT_KINDS",
    "Base",
    "Candidate",
    "FieldSpec",
    "Location",
    "Pool",
    "Trial",
    "Verdict",
    "build_files",
    "candidates",
    "fields",
    "judge",
    "load_base",
    "locations",
    "mutated",
    "rename_everywhere",
    "revalidate",
    "sparse",
    "trial",
]
