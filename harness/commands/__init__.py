"""One module per `harness` subcommand: its flags and the wiring of the areas it uses."""
