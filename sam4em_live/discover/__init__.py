"""Finding particles without clicks (docs/discovery.md).

A low-resolution detector and the policy that turns its candidates into proposals or tracked particles;
the service side is `sam4em_live.service.discovery`.
"""
