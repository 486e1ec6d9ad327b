"""The model of new cars' WLTP CO2, as its own package: the only code shipped with a model version.

- `inputs`: the measured inputs with units and physical ranges, and `columns`, the names derived from them;
- `vocabulary`: fuel types, fuel modes and makes, normalised;
- `families`: the regressor families the pipeline trains;
- `model`: features, the physics and zero-emission rules, the candidates (scikit-learn pipelines);
- `engine`: their predictions computed from fitted parameters, fast enough for one car per request.

Nothing here imports the platform (`co2`). A model version records this package's version and the
digest of its code (`co2_model.code`); a version built by other code is refused, not loaded.
"""

# Raise it with every change of a module here that a fitted model depends on.
__version__ = "1.2.0"
