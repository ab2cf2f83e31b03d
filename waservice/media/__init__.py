"""Media sent and received: intake (upload, base64 or URL) into spool files, the mimetype rules,
and the cache of downloaded media."""
