"""api-version parsing, and every per-version difference in one place.

ARM accepts any date-shaped version (``2024-11-01``, ``2021-04-01-preview``): today's SDKs send versions
newer than any list we could keep. The Batch data plane uses ``2019-08-01.10.0`` style versions and, from
``2025-06-01`` on, plain dates. Behaviour that changes with the version is expressed as methods here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from shoal.core import errors

_SHAPE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:\.(\d+)\.(\d+))?(?:-(preview|beta|alpha|privatepreview))?$",
                    re.IGNORECASE)


@dataclass(frozen=True, order=True)
class ApiVersion:
    day: date
    major: int = 0
    minor: int = 0
    text: str = ""

    # --- per-version behaviour -------------------------------------------------------------
    def data_plane_accepts_managed_image(self) -> bool:
        """Bare managed images are accepted by the Batch data plane only up to 2019-08-01.10.0."""
        return self.day <= date(2019, 8, 1)


def parse(text: str | None) -> ApiVersion:
    """Parse an ``api-version`` query value or raise the ARM error a client would get."""
    if text is None or text == "":
        raise errors.MissingApiVersionParameter(
            "The api-version query parameter (?api-version=) is required for all requests."
        )
    m = _SHAPE.match(text.strip())
    if not m:
        raise errors.InvalidApiVersionParameter(
            f"The api-version '{text}' is invalid. The supported versions are dates such as '2024-11-01' "
            "(ARM) or '2024-07-01.20.0' / '2025-06-01' (Batch)."
        )
    try:
        day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError as exc:
        raise errors.InvalidApiVersionParameter(f"The api-version '{text}' is not a valid date.") from exc
    return ApiVersion(day, int(m.group(4) or 0), int(m.group(5) or 0), text)
