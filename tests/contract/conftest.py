from tests.lab.conftest import lab, lab_runtime  # noqa: F401  (the lab fixtures, shared)
