"""The clinicians' web app (`heartsight clinician serve`): sdk.clinician.web.app."""

from sdk.clinician.web.app import create_app

__all__ = ["create_app"]
