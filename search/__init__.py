"""Search: the query syntax, the tantivy index and its change-stream follower, and the engine
that ranks and pages."""
