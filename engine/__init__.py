"""Everything that computes: bodies, rendering, Render-Localize-Lift. No UI imports here."""
