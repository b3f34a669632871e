"""Serve trained models: a web page, a JSON API and a Label Studio ML backend (`unetkit serve`).

- `command`: the sub-command's flags and `run` (cli.py calls `add_parser`);
- `models`: each model loaded once as a `Predictor` and warmed up;
- `app`: the FastAPI app (`create_app`): routes, the bounded queue, one-sentence errors;
- `page`: the page's HTML, CSS and JavaScript; `results`: areas, previews, downloads;
- `labelstudio` and `rle`: Label Studio's protocol and its brush-mask code;
- `sources`: which client-supplied images may be read; `uploads`: bodies read in memory;
- `server`: uvicorn in the foreground or in a thread.

Importing this package loads neither torch nor FastAPI (the CLI builds its parser from it).
"""
