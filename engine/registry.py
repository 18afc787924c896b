"""Every model the studio and the CLIs use, registered on an engine: the studio's own and each Ray Serve replica's."""
from __future__ import annotations


def register_models(engine) -> None:
    """Register the contact models (InteractVLM variants, the category prior) and the segmenters."""
    from engine.contact.predict import register_contact_models
    from engine.hoi.segment import register_segmenters

    register_contact_models(engine)
    register_segmenters(engine)
