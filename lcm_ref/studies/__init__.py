"""The back-ends of the notebooks: each study computes what a report page shows (behaviour: what diffusers'
scheduler does; accuracy: error against the reference; bench: speed as ratios; analogs: the paper's figures on the
analytic testbed; report: executing the notebooks into pages). Notebooks call these and only display."""
