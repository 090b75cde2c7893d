"""Local stack for the Intune passcode reset functions: Azurite, the Intune Graph simulator and a
Functions-like host. Development and test tooling only; never deployed (see .funcignore)."""
