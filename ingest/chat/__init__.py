"""Chat ingestion over signed webhooks; one small adapter module per payload format."""
