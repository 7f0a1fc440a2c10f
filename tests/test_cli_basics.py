import subprocess
import sys

import fairscan


def test_version(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0
    assert out.strip() == f"fairscan {fairscan.__version__}"


def test_help_lists_every_command(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    for name in (
        "prepare",
        "pretrain",
        "finetune",
        "predict",
        "audit",
        "ensemble",
        "demo",
        "models",
        "presets",
        "study",
    ):
        assert name in out


def test_unknown_command_is_usage_error(run_cli):
    code, _, err = run_cli("frobnicate")
    assert code == 2
    assert "No such command" in err


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from fairscan.cli import main; rc = main(['--help']);"
        "heavy = [m for m in ('torch', 'sklearn', 'matplotlib', 'pandas', 'timm', 'accelerate') if m in sys.modules];"
        "print(heavy); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_python_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "fairscan", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "fairscan" in out.stdout


def test_a_closed_output_pipe_ends_quietly(tmp_path):
    """`fairscan audit ... --json | head`: when the reader has gone the command stops with 1, silently."""
    from tests._preds import make_preds

    make_preds(200, ("edema",), seed=1).to_parquet(tmp_path / "preds.parquet")
    for args in (["audit", str(tmp_path / "preds.parquet"), "--attrs", "sex", "--intervals", "none",
                  "--json"], ["models", "list"], ["prepare", "--help"]):  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "fairscan", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        proc.stdout.close()  # the reader goes away before the command writes
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == 1, args
        assert "Error" not in err and "Traceback" not in err, (args, err)
