#!/bin/sh
# /usr/bin/model-training-manager: starts the app installed in /opt/model-training-manager.
# The path is resolved from this script's own location rather than written as /opt, so that a
# copy unpacked elsewhere (dpkg -x into a scratch root, as the packaging test does) runs its own
# app and not whichever one is installed.
here="$(dirname "$(readlink -f "$0")")"
exec "$here/../../opt/model-training-manager/Model Training Manager" "$@"
