"""pe-ha core: settings, validation, command builders, the remote executor, the PE API client and errors.

Import direction: ``flows`` -> ``tasks`` -> ``pe_ha``. Nothing in this package imports ``tasks``,
``flows``, ``lab`` or ``bench``.
"""
