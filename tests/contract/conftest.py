from tests.lab.conftest import lab, lab_ctx  # noqa: F401  (the lab fixtures, shared)
