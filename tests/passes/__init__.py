"""Tests of wattwise.passes (a package, so test module names cannot clash with other folders)."""
