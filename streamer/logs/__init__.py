"""Get Logs, one module per concern, imported one way (handler -> logs -> storage, lines):

- `query`: the query string, parsed and normalised (400 `invalid_query`, `invalid_fields`);
- `plan`: the page asked for, a `Walk` and the `Cursor` it continues from, checked
  without I/O (400 `invalid_cursor`), and the cursor's version check;
- `source`: the log ready for ranged reads (the store's object, or a local copy), and
  the scan slots that admit expensive pages (503 `overloaded` beyond them);
- `inflated`: the shared local copies of gzip logs, within a disk bound;
- `seek`: one page's walk over a ranged log: its window, edges and lines;
- `scan`: filtered scans (`level`, `contains`) within a budget, off the event loop;
- `body`: the JSON envelope and the cursors on from the page's edges.
"""
