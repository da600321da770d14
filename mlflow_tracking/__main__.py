"""The component package's plugin entry point: ``python mlflow_tracking <engine address>``, as
Pulumi's Python language host runs a plugin directory (docs/component-package.md).

It serves ``mlflowtracking:index:TrackingServer`` (components/package.py). The repository root
goes on sys.path: the plugin is this directory, the code is its parent's (a package added from a
git subdirectory is installed with the whole repository).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.package import serve  # noqa: E402

if __name__ == "__main__":
    serve(sys.argv[1:])
