# `venv_with VENV MODULE PACKAGE...`: makes the Python venv VENV (installing python3-venv with
# apt-get when missing) and installs the packages into it unless MODULE imports already.
venv_with() {
    local venv=$1 module=$2
    shift 2
    "$venv/bin/python" -c "import $module" 2>/dev/null && return 0
    if [ ! -x "$venv/bin/python" ] && ! python3 -m venv "$venv" 2>/dev/null; then
        echo "venv.sh: installing python3-venv (apt-get)" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq >&2 || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >&2
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q "$@"
}
