"""Settings: shipped configs, layering (files, profile, env, --set), validation messages, secrets."""

from __future__ import annotations

import datetime as dt
import typing
from pathlib import Path

import pydantic
import pytest

from trader.config import (
    SECRET_MASK,
    Interval,
    Settings,
    available_profiles,
    load_settings,
    render_settings,
)
from trader.data.schema import INTERVALS
from trader.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASE = CONFIGS / "base.yaml"
SHIPPED = sorted(p.name for p in CONFIGS.glob("*.yaml"))
PROFILES = ("low", "balanced", "strict")  # loosest to tightest


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(*args: object, **kwargs: object) -> str:
    """The ConfigError message of a load that must fail; it must be one clean line."""
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert "pydantic" not in message and "validation error" not in message
    return message


# -- shipped configs ---------------------------------------------------------------------------------------


def test_intervals_match_the_bar_schema() -> None:
    assert set(typing.get_args(Interval)) == set(INTERVALS)


def test_base_yaml_equals_model_defaults() -> None:
    assert load_settings([BASE], env={}) == Settings()


def test_all_expected_configs_are_shipped() -> None:
    expected = {"base", "demo", "paper", "sweep", *(f"risk_{p}" for p in PROFILES)}
    assert expected <= {Path(name).stem for name in SHIPPED}
    assert set(PROFILES) <= set(available_profiles(CONFIGS))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads_alone_and_on_base(name: str) -> None:
    alone = load_settings([CONFIGS / name], env={})
    layered = load_settings([BASE, CONFIGS / name], env={})
    # base.yaml is the defaults, so layering a file on it changes nothing.
    assert alone == layered


def test_demo_config_names_the_demo_dataset() -> None:
    s = load_settings([BASE, CONFIGS / "demo.yaml"], env={})
    assert s.synth.symbol_count == 20
    assert (s.synth.start, s.synth.end) == (dt.date(2020, 1, 1), dt.date(2024, 12, 31))
    assert set(s.synth.intervals) == {"1d", "1m"} and s.synth.seed == 7
    assert s.data.store == "./data"
    assert 2 <= len(s.composer.strategies) <= 3


def test_paper_config_is_paper_with_whole_shares() -> None:
    s = load_settings([BASE, CONFIGS / "paper.yaml"], env={})
    assert s.ibkr.paper_only and s.ibkr.port in (7497, 4002)
    assert s.engine.fractional_shares is False
    assert s.session.symbols and set(s.session.symbols) <= set(s.tickers)


def test_sweep_config_sets_no_secret() -> None:
    s = load_settings([BASE, CONFIGS / "sweep.yaml"], env={})
    assert s.sweep.storage_url is None and s.sweep.pbo_blocks % 2 == 0


# -- risk profiles -----------------------------------------------------------------------------------------


def _risk(profile: str) -> dict[str, object]:
    return load_settings([BASE], profile=profile, env={}).risk.model_dump()


def test_risk_overlays_touch_only_risk_and_set_every_risk_field() -> None:
    import yaml

    for profile in PROFILES:
        data = yaml.safe_load((CONFIGS / f"risk_{profile}.yaml").read_text())
        assert set(data) == {"risk"}
        assert set(data["risk"]) == set(Settings.model_fields["risk"].annotation.model_fields)


def test_strict_is_tightest_on_every_numeric_risk_field() -> None:
    low, balanced, strict = (_risk(p) for p in PROFILES)
    numeric = [k for k, v in strict.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    assert len(numeric) >= 10
    for key in numeric:
        # Every limit is tighter when smaller.
        assert strict[key] < balanced[key] <= low[key], key


def test_profile_goes_after_the_first_file_and_before_the_rest(tmp_path: Path) -> None:
    _write(tmp_path, "risk_custom.yaml", "risk:\n  max_drawdown: 0.11\n  daily_loss_limit: 0.01\n")
    first = _write(tmp_path, "first.yaml", "risk:\n  max_drawdown: 0.3\n  max_open_positions: 7\n")
    later = _write(tmp_path, "later.yaml", "risk:\n  daily_loss_limit: 0.02\n")
    s = load_settings([first, later], profile="custom", env={})
    assert s.risk.max_drawdown == 0.11  # profile beats the first file
    assert s.risk.daily_loss_limit == 0.02  # a later file beats the profile
    assert s.risk.max_open_positions == 7  # untouched keys of the first file survive (deep merge)


def test_profile_without_files_comes_from_configs_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "configs").mkdir()
    _write(tmp_path / "configs", "risk_mine.yaml", "risk:\n  max_gross_leverage: 0.25\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(profile="mine", env={}).risk.max_gross_leverage == 0.25


def test_unknown_profile_names_the_available_ones() -> None:
    message = _error([BASE], profile="yolo")
    assert "'yolo'" in message
    for profile in PROFILES:
        assert profile in message


def test_profile_that_sets_other_sections_is_refused(tmp_path: Path) -> None:
    base = _write(tmp_path, "base.yaml", "")
    _write(tmp_path, "risk_sneaky.yaml", "risk:\n  max_drawdown: 0.1\nibkr:\n  paper_only: false\n")
    message = _error([base], profile="sneaky")
    assert "risk_sneaky.yaml" in message and "ibkr" in message


# -- environment and --set ---------------------------------------------------------------------------------


def test_trader_env_vars_nest_with_double_underscore() -> None:
    s = load_settings(
        env={
            "TRADER_RISK__MAX_DRAWDOWN": "0.2",
            "TRADER_SESSION__SYMBOLS": "[AAPL, MSFT]",
            "TRADER_SESSION__GAP_FILLER__MAX_RETRIES": "7",
            "TRADER_DATA__SANITY__MODE": "off",
            "TRADER_TICKERS__BRK__ASSET_CLASS": "equity",
            "TRADER_TICKERS__BRK__EXCHANGE": "NYSE",
            "TRADER_TICKERS__BRK__CURRENCY": "USD",
            "UNRELATED": "ignored",
        }
    )
    assert s.risk.max_drawdown == 0.2
    assert s.session.symbols == ("AAPL", "MSFT")
    assert s.session.gap_filler.max_retries == 7
    assert s.data.sanity.mode == "off"
    assert s.tickers["BRK"].exchange == "NYSE"  # mapping keys keep their case


def test_established_env_names() -> None:
    s = load_settings(
        env={
            "IBKR_HOST": "10.0.0.5",
            "IBKR_PORT": "7496",
            "IBKR_CLIENT_ID": "12",
            "IBKR_PAPER_TRADING": "false",
            "MAX_GROSS_LEVERAGE": "1.5",
            "LOG_LEVEL": "debug",
        }
    )
    assert (s.ibkr.host, s.ibkr.port, s.ibkr.client_id, s.ibkr.paper_only) == ("10.0.0.5", 7496, 12, False)
    assert s.risk.max_gross_leverage == 1.5
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize(("text", "fraction"), [("10", 0.10), ("2.5", 0.025), ("5%", 0.05)])
def test_pct_env_names_are_percent(text: str, fraction: float) -> None:
    s = load_settings(env={"MAX_POSITION_PCT": text, "DAILY_LOSS_CUT_PCT": text})
    assert s.risk.max_position_pct == pytest.approx(fraction)
    assert s.risk.daily_loss_limit == pytest.approx(fraction)


def test_pct_env_errors_say_it_is_a_percent() -> None:
    message = _error(env={"MAX_POSITION_PCT": "150"})
    assert "MAX_POSITION_PCT" in message and "percent" in message and "1.5" in message
    assert "MAX_POSITION_PCT" in _error(env={"MAX_POSITION_PCT": "ten"})


def test_trader_names_win_over_established_names() -> None:
    s = load_settings(env={"IBKR_PORT": "4002", "TRADER_IBKR__PORT": "7497"})
    assert s.ibkr.port == 7497


def test_set_wins_over_env_wins_over_files(tmp_path: Path) -> None:
    f = _write(tmp_path, "f.yaml", "risk:\n  max_drawdown: 0.3\n  stop_loss_pct: 0.1\n  vol_target: 0.2\n")
    env = {"TRADER_RISK__MAX_DRAWDOWN": "0.25", "TRADER_RISK__STOP_LOSS_PCT": "0.07"}
    s = load_settings([f], ["risk.max_drawdown=0.15"], env=env)
    assert (s.risk.max_drawdown, s.risk.stop_loss_pct, s.risk.vol_target) == (0.15, 0.07, 0.2)


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADER_ENGINE__RNG_SEED", "42")
    assert load_settings().engine.rng_seed == 42
    assert load_settings(env={}).engine.rng_seed == 0


def test_set_values_are_yaml() -> None:
    s = load_settings(
        [],
        [
            "composer.strategies=[{name: sma_cross, params: {fast: 5, slow: 20}}, {name: breakout}]",
            "composer.strategies[0].params.fast=8",
            "ray.address=",
            "sweep.timeout_s=1.5e3",
            "data.interval=5m",
        ],
        env={},
    )
    assert [x.name for x in s.composer.strategies] == ["sma_cross", "breakout"]
    assert s.composer.strategies[0].params == {"fast": 8, "slow": 20}
    assert s.ray.address is None and s.sweep.timeout_s == 1500.0 and s.data.interval == "5m"


def test_set_of_a_mapping_merges_deeply(tmp_path: Path) -> None:
    f = _write(tmp_path, "f.yaml", "risk:\n  max_drawdown: 0.3\n")
    s = load_settings([f], ["risk={stop_loss_pct: 0.02}"], env={})
    assert (s.risk.max_drawdown, s.risk.stop_loss_pct) == (0.3, 0.02)


def test_yaml_uses_1_2_scalars(tmp_path: Path) -> None:
    f = _write(
        tmp_path,
        "f.yaml",
        "data:\n  sanity: {mode: off}\ncosts:\n  slippage_bps: 1e1\n"
        "tickers:\n  NO: {asset_class: equity, exchange: NYSE, currency: USD}\n",
    )
    s = load_settings([f], env={})
    assert s.data.sanity.mode == "off"  # YAML 1.1 would make this False
    assert s.costs.slippage_bps == 10.0
    assert "NO" in s.tickers


# -- messages ----------------------------------------------------------------------------------------------


def test_missing_file_names_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert str(missing) in _error([missing])


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    f = _write(tmp_path, "bad.yaml", "engine:\n  rng_seed: 1\n  x: [1, 2\n  y: 3\n")
    message = _error([f])
    assert message.startswith(f"{f}:") and "line" in message
    line = int(message[len(str(f)) + 1 :].split(":")[0])
    assert 3 <= line <= 5


def test_duplicate_yaml_key_is_refused_with_lines(tmp_path: Path) -> None:
    f = _write(tmp_path, "dup.yaml", "risk:\n  max_drawdown: 0.1\n  max_drawdown: 0.5\n")
    message = _error([f])
    assert f"{f}:3:" in message and "duplicate key 'max_drawdown'" in message and "line 2" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    f = _write(tmp_path, "list.yaml", "- risk\n- engine\n")
    message = _error([f])
    assert str(f) in message and "mapping" in message and "list" in message
    assert load_settings([_write(tmp_path, "empty.yaml", "")], env={}) == Settings()


def test_unknown_key_names_file_line_key_and_suggestion(tmp_path: Path) -> None:
    f = _write(tmp_path, "x.yaml", "engine:\n  rng_seed: 1\nrisk:\n  max_drawdwn: 0.2\n")
    assert _error([f]) == f"{f}:4: unknown key risk.max_drawdwn (did you mean risk.max_drawdown?)"


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    message = _error([], ["bandit.zzz=1"])
    assert message.startswith("--set bandit.zzz: unknown key bandit.zzz")
    assert "prior_variance" in message and "discount" in message


def test_unknown_key_from_env_names_the_variable() -> None:
    message = _error(env={"TRADER_SWEEP__N_TRIAL": "5"})
    assert "env TRADER_SWEEP__N_TRIAL" in message and "did you mean sweep.n_trials?" in message


def test_unknown_key_inside_a_list_item(tmp_path: Path) -> None:
    f = _write(tmp_path, "c.yaml", "composer:\n  strategies:\n    - name: a\n      parms: {x: 1}\n")
    message = _error([f])
    assert (
        "composer.strategies[0].parms" in message and "did you mean composer.strategies[0].params?" in message
    )


def test_out_of_range_names_key_value_range_and_source(tmp_path: Path) -> None:
    f = _write(tmp_path, "r.yaml", "\nrisk:\n  max_drawdown: 1.5\n")
    message = _error([f])
    assert message.startswith(f"{f}:3:")
    assert "risk.max_drawdown=1.5" in message and "0 < value <= 1" in message
    env_message = _error(env={"TRADER_WALKFORWARD__PURGE": "-1"})
    assert "env TRADER_WALKFORWARD__PURGE" in env_message and "walkforward.purge=-1" in env_message
    assert ">= 0" in env_message


def test_error_names_the_layer_that_set_the_bad_key(tmp_path: Path) -> None:
    f = _write(tmp_path, "f.yaml", "risk:\n  stop_loss_pct: 0.1\n")
    message = _error(
        [f], ["risk.max_drawdown=2", "risk.vol_target=0.3"], env={"TRADER_RISK__MAX_GROSS_LEVERAGE": "2"}
    )
    assert message.startswith("--set risk.max_drawdown: risk.max_drawdown=2 ")


def test_infinite_and_nan_limits_are_refused() -> None:
    assert "not a finite number" in _error([], ["risk.max_gross_leverage=.inf"])
    assert "risk.max_drawdown=nan" in _error([], ["risk.max_drawdown=.nan"])


def test_wrong_type_and_bad_choice() -> None:
    message = _error([], ["engine.min_history_bars=lots"])
    assert "--set engine.min_history_bars" in message and "'lots'" in message and "integer > 0" in message
    choice = _error([], ["data.sanity.mode=fix"])
    assert "data.sanity.mode='fix'" in choice
    for mode in ("enforce", "warn", "repair", "off"):
        assert mode in choice


def test_malformed_set_and_missing_list_index() -> None:
    assert "key.path=value" in _error([], ["risk.max_drawdown"])
    assert "composer.strategies[3]" in _error([], ["composer.strategies[3].name=x"])


def test_paper_only_refuses_live_ports() -> None:
    message = _error(env={"IBKR_PORT": "7496"})
    assert "env IBKR_PORT" in message and "ibkr.port=7496" in message
    assert "ibkr.paper_only=false" in message
    assert load_settings([], ["ibkr.port=7497"], env={}).ibkr.port == 7497
    assert load_settings([], ["ibkr.port=7496", "ibkr.paper_only=false"], env={}).ibkr.port == 7496
    assert "live trading port" in _error([], ["ibkr.port=4001"])
    # Other ports (a simulated gateway, a forwarded paper gateway) pass; the account check guards them.
    assert load_settings([], ["ibkr.port=14002"], env={}).ibkr.port == 14002


@pytest.mark.parametrize("fast", [30, 20])
def test_fast_must_be_below_slow(tmp_path: Path, fast: int) -> None:
    f = _write(
        tmp_path,
        "c.yaml",
        "composer:\n  strategies:\n    - {name: a, params: {period: 14}}\n"
        f"    - {{name: b, params: {{fast: {fast}, slow: 20}}}}\n",
    )
    message = _error([f])
    assert f"composer.strategies[1].params.fast={fast}" in message and "slow" in message
    assert load_settings([f], ["composer.strategies[1].params.fast=5"], env={}).composer.strategies[1]


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(pydantic.ValidationError):
        s.risk.max_drawdown = 0.9  # type: ignore[misc]


# -- secrets -----------------------------------------------------------------------------------------------


def test_secrets_never_printed() -> None:
    env = {
        "TRADER_SWEEP__STORAGE_URL": "postgresql://u:hunter2@db/optuna",
        "TRADER_SESSION__WEBHOOK_URL": "https://hooks.example/hunter2",
    }
    s = load_settings(env=env)
    assert s.sweep.storage_url is not None
    assert s.sweep.storage_url.get_secret_value() == env["TRADER_SWEEP__STORAGE_URL"]
    for text in (render_settings(s), repr(s), str(s), repr(s.sweep), str(s.session)):
        assert "hunter2" not in text
    assert render_settings(s).count(SECRET_MASK) == 2


def test_secret_in_a_bad_value_message_is_masked() -> None:
    message = _error(env={"TRADER_SWEEP__STORAGE_URL": "[hunter2]"})
    assert "sweep.storage_url" in message and "hunter2" not in message


def test_rendered_settings_load_back(tmp_path: Path) -> None:
    s = load_settings([BASE, CONFIGS / "demo.yaml", CONFIGS / "paper.yaml"], profile="strict", env={})
    again = load_settings([_write(tmp_path, "shown.yaml", render_settings(s))], env={})
    assert again == s


def test_masked_secret_fed_back_is_refused(tmp_path: Path) -> None:
    f = _write(tmp_path, "shown.yaml", f"sweep:\n  storage_url: '{SECRET_MASK}'\n")
    assert "TRADER_SWEEP__STORAGE_URL" in _error([f])
