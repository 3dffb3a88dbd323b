//! Real registry clients against the registry frontend on loopback.
