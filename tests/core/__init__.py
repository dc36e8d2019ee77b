"""Unit tests of the pure core: expected values from provider documents, worked cases or by hand."""
