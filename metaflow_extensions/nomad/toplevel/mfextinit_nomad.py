toplevel = "nomad_toplevel"
