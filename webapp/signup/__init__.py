"""The one way through, and what it needs: the flow against Engage (flow: find, then create),
a submitted form's way from checks to outcome (submission), the form (forms), the consents and
their records (consents, consent_records), the public screens' release moment (padding), and
sign-ups kept while Engage cannot take them (outbox). Imports access, ops, and below."""
