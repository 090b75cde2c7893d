"""Throwaway function apps used by the devstack host tests (never deployed)."""
