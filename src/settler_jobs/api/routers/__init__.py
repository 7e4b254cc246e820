"""One router module per capability; `app.ROUTERS` lists the ones mounted."""
