"""Weight-space merging θ̂ = θ0 + α·τ (Speech-FT's step 2) and the field's other merge methods.

``methods`` holds the arithmetic (pure tensor functions), ``stream`` the file I/O (inputs read
tensor by tensor, outputs written record by record), ``config`` the options and YAML configs,
``run`` the command that ties them together. Importing this package stays cheap: nothing here
imports torch until a submodule is used.
"""
