"""The tracking domain: short links and their clicks, unsubscribe pages, inbound replies."""
