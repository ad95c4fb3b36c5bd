"""The built-in simulated screen: a CRISPR + compound Cell Painting screen with known biology."""
