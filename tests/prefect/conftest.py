from tests.lab.conftest import fresh_lab, lab, lab_runtime  # noqa: F401  (the lab fixtures, shared)
