"""One module per route: what a request meets after the app's common checks (the route,
the method, the token). `download` plans a file response and pumps it; `logs` reads one
page of a log. `common` holds what both do: resolve the log, map the store's failures."""
