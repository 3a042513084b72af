"""Who may do what: devices enrolled by staff (devices), PINs and their limits (pins), signed
and sealed cookies (signed). Imports ops, and below."""
