# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.
"""Python package of the ``cal_3d_classification`` bundle: the CAL network, its loss, data and engine helpers."""
