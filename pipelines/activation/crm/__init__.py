"""Scores into and outcomes out of HubSpot and Salesforce, through the vendors' Python clients.

Optional (extra ``crm``): ``hubspot-api-client``, ``simple-salesforce`` and ``pyrate-limiter``
are imported by the modules that need them, never by this package.
"""
