"""The notebooks behind `lcm-ref report`, shipped inside the package (as `lcm_ref.notebooks`) so that a wheel install
can execute them. Each is thin: it calls `lcm_ref.studies` and shows the result."""
