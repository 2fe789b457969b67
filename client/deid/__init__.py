"""De-identification of DICOM files to PS3.15 Annex E (Basic Application Level Confidentiality Profile).

The pieces, one concept per module:

- :mod:`~client.deid.table` - PS3.15 Table E.1-1 as data (versioned), plus fedscan's supplement;
- :mod:`~client.deid.options` - :class:`DeidOptions`: profile options by name, burned-in policy;
- :mod:`~client.deid.profile` - the table and options compiled into one action per tag;
- :mod:`~client.deid.pseudonyms` - keyed UIDs, patient pseudonyms and date shifts (HMAC-SHA256);
- :mod:`~client.deid.dates`, :mod:`~client.deid.descriptors`, :mod:`~client.deid.values` - value rules;
- :mod:`~client.deid.burned_in` - which files may show text in their pixels, and masking;
- :mod:`~client.deid.engine` - :class:`Deidentifier`, which applies it all to one data set;
- :mod:`~client.deid.folder` - :func:`deidentify_folder`: a folder in, a folder out, in parallel;
- :mod:`~client.deid.report` - :class:`DeidReport`: counts and reasons, never PHI;
- :mod:`~client.deid.command` - the ``fedscan site deidentify`` command body.

See ``docs/deidentification.md`` for what is and is not protected.
"""

from __future__ import annotations

from client.deid.engine import Deidentifier, DeidOutcome, DeidRejected
from client.deid.folder import deidentify_folder
from client.deid.options import OPTION_NAMES, PROFILES, DeidOptions
from client.deid.pseudonyms import patient_pseudonym, pseudonymize_uid
from client.deid.report import DeidReport, Rejection
from client.deid.table import TABLE_EDITION

__all__ = [
    "OPTION_NAMES",
    "PROFILES",
    "TABLE_EDITION",
    "DeidOptions",
    "DeidOutcome",
    "DeidRejected",
    "DeidReport",
    "Deidentifier",
    "Rejection",
    "deidentify_folder",
    "patient_pseudonym",
    "pseudonymize_uid",
]
