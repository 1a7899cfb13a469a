"""Multi-factor sign-in: TOTP and WebAuthn factors, recovery codes, the tenant's MFA policy,
the second sign-in step and step-up for sensitive decisions."""
