"""The stylegan2 generator stage: seeds, truncation, walks, mixing grids, snapshots, the CLI commands.

Networks are tiny random StyleGAN2 generators saved as real CineML checkpoints (or reference pickles);
every test runs the real stage and reads the PNGs it wrote.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import cineml.cli
from cineml import CinemlError
from cineml.manifest import load_project
from cineml.testing import make_context, make_project
from cineml_plugins.stylegan2 import checkpoints as ckpt
from cineml_plugins.stylegan2.commands import add_commands
from cineml_plugins.stylegan2.generator import (
    StyleGAN2Generator,
    WalkSpec,
    loop_positions,
    parse_mixing,
    parse_seeds,
    parse_walk,
    seed_z,
    still_name,
    walk_ws,
)
from cineml_plugins.stylegan2.networks import Generator

sys.path.insert(0, str(Path(__file__).parent))
from test_stylegan2_import import reference_pickle, tiny_discriminator  # noqa: E402
from training_frames import truncate  # noqa: E402

TINY = dict(z_dim=32, w_dim=32, img_resolution=16, img_channels=3, channel_base=256, channel_max=64, map_layers=2)


def make_g(seed: int = 0, **kw) -> Generator:
    torch.manual_seed(seed)
    G = Generator(**{**TINY, **kw})
    with torch.no_grad():
        for m in G.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.5)
        G.mapping.w_avg.normal_()
    return G.eval()


def save_snapshot(folder: Path, G: Generator, nimg: int) -> Path:
    path = folder / ckpt.checkpoint_name(nimg)
    ckpt.save_checkpoint(path, {f"G_ema.{k}": v for k, v in G.state_dict().items()},
                         {"G_kwargs": G.init_kwargs, "kimg": nimg / 1000})
    return path


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    """A training folder with two snapshots (4 and 8 kimg) of different networks."""
    folder = tmp_path_factory.mktemp("train")
    save_snapshot(folder, make_g(1), 4000)
    save_snapshot(folder, make_g(2), 8000)
    return folder


def run(tmp_path: Path, train: Path | None, name: str = "out", messages: list | None = None, **options) -> Path:
    impl = StyleGAN2Generator()
    out = tmp_path / name
    ctx = make_context(tmp_path, impl, options, inputs={"train": train} if train else {}, output=out)
    if messages is not None:
        ctx.log = ctx.warn = messages.append
    impl.generate(ctx)
    return out


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int16)


# --- Option parsing --------------------------------------------------------------------------------


def test_seed_syntax():
    assert parse_seeds("0-3,7,10-12") == [0, 1, 2, 3, 7, 10, 11, 12]
    assert parse_seeds(" 5 ") == [5] and parse_seeds(42) == [42]
    assert parse_seeds([1, "3-4", 1]) == [1, 3, 4]
    assert parse_seeds("2,2,1-2") == [2, 1]
    for bad, why in (("3-1", "backwards"), ("a-b", "not a seed"), ("1,,2", "not a seed"), ("-4", "not a seed"),
                     ("", "not a seed"), (True, "not a list"), (1.5, "not a list"), ("5000000000", "from 0 to")):
        with pytest.raises(CinemlError, match=why) as err:
            parse_seeds(bad)
        assert "generate.seeds" in str(err.value)


def test_manifest_rejects_bad_seeds_naming_the_key(tmp_path):
    manifest = make_project(tmp_path / "p", """
        [project]
        source = "film.mp4"
        [extract]
        use = "fps"
        [train]
        use = "stylegan2"
        [generate]
        use = "stylegan2"
        seeds = "1-x"
        """, files={"film.mp4": b"not used"})
    with pytest.raises(CinemlError, match=r"generate\.seeds: '1-x' is not valid: '1-x' is not a seed"):
        load_project(manifest, _registry_with_generator())


def _registry_with_generator():
    """Built-in plugins plus this generator (the lead wires it into plugin.py; until then register it here)."""
    from cineml.testing import registry_with
    from cineml_plugins.stylegan2 import plugin

    reg = registry_with()
    if "stylegan2" not in reg.impls["generators"]:
        module = type(sys)("stylegan2_generate_test_plugin")
        module.register_generators = cineml.hookimpl(lambda register: register(StyleGAN2Generator()))
        reg.add_plugin(module, name="stylegan2-generate-test")
    assert plugin is not None
    return reg


def test_walk_and_mixing_tables_are_checked():
    spec = parse_walk({"keyframes": "0-3", "seconds": 2, "fps": 5})
    assert spec.frames == 10 and spec.space == "w" and spec.interpolation == "cubic"
    assert parse_walk({"keyframes": "0,1", "space": "z"}).interpolation == "slerp"
    for bad, key in (({"keyframes": "3"}, "keyframes"), ({"seconds": 0}, "seconds"), ({"speed": 2}, "speed"),
                     ({"space": "w", "interpolation": "slerp"}, "interpolation")):
        with pytest.raises(CinemlError, match=rf"generate\.walk\.{key}"):
            parse_walk(bad)
    assert parse_mixing({"rows": "0-1"}).columns == [10, 11, 12, 13]
    with pytest.raises(CinemlError, match=r"generate\.mixing\.layers"):
        parse_mixing({"layers": "0-x"})


def test_batch_and_device_continue_earlier_work():
    """They change how images are computed, not which: the engine keeps the finished ones."""
    assert {o.name for o in StyleGAN2Generator.options if o.continues} == {"batch", "device"}


# --- Stills ---------------------------------------------------------------------------------------


def test_stills_are_deterministic_and_described(tmp_path, train_dir):
    a = run(tmp_path, train_dir, "a", seeds="0-4,9", truncation=0.8, batch=4)
    b = run(tmp_path, train_dir, "b", seeds="0-4,9", truncation=0.8, batch=4)
    names = sorted(p.name for p in a.glob("*.png"))
    assert names == ["seed0000.png", "seed0001.png", "seed0002.png", "seed0003.png", "seed0004.png", "seed0009.png"]
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes()
        with Image.open(a / n) as im:
            assert im.mode == "RGB" and im.size == (16, 16)
    assert not np.array_equal(pixels(a / names[0]), pixels(a / names[1]))
    # batch size does not change the picture (beyond float rounding)
    c = run(tmp_path, train_dir, "c", seeds="0-4,9", truncation=0.8, batch=1)
    for n in names:
        assert np.abs(pixels(a / n) - pixels(c / n)).max() <= 1
    record = json.loads((a / "generated.json").read_text())
    assert record["snapshot"].endswith("network-snapshot-000008.safetensors") and record["kimg"] == 8
    assert record["images"][5] == {"file": "seed0009.png", "seed": 9, "psi": 0.8, "cutoff": None, "noise_mode": "const"}


def test_seed_means_the_reference_latent(tmp_path, train_dir):
    out = run(tmp_path, train_dir, seeds="42", snapshot=4)
    G = ckpt.load_generator(train_dir / ckpt.checkpoint_name(4000))
    z = torch.from_numpy(np.random.RandomState(42).randn(1, G.z_dim).astype(np.float32))
    assert np.allclose(seed_z([42], G.z_dim), z.numpy())
    with torch.no_grad():
        img = G(z, noise_mode="const")
    want = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.abs(pixels(out / "seed0042.png") - want).max() <= 1


def test_psi_zero_gives_the_average_image_for_every_seed(tmp_path, train_dir):
    out = run(tmp_path, train_dir, seeds="0-5", truncation=0.0)
    first = pixels(out / "seed0000.png")
    assert all(np.array_equal(first, pixels(p)) for p in out.glob("seed*.png"))
    cut = run(tmp_path, train_dir, "cut", seeds="0-2", truncation=0.0, truncation_cutoff=2)
    assert not np.array_equal(pixels(cut / "seed0000.png"), pixels(cut / "seed0001.png"))


def test_noise_modes(tmp_path, train_dir):
    const = run(tmp_path, train_dir, "const", seeds="3")
    none = run(tmp_path, train_dir, "none", seeds="3", noise_mode="none")
    r1 = run(tmp_path, train_dir, "r1", seeds="3", noise_mode="random")
    r2 = run(tmp_path, train_dir, "r2", seeds="3", noise_mode="random")
    assert not np.array_equal(pixels(const / "seed0003.png"), pixels(none / "seed0003.png"))
    assert not np.array_equal(pixels(const / "seed0003.png"), pixels(r1 / "seed0003.png"))
    assert np.array_equal(pixels(r1 / "seed0003.png"), pixels(r2 / "seed0003.png"))  # repeatable


def test_random_noise_comes_from_each_images_own_seed(tmp_path, train_dir):
    together = run(tmp_path, train_dir, "together", seeds="0-3", noise_mode="random", batch=4)
    const = run(tmp_path, train_dir, "const", seeds="0-3", batch=4)
    for seed in range(4):
        alone = run(tmp_path, train_dir, f"alone{seed}", seeds=str(seed), noise_mode="random", batch=1)
        name = still_name(seed)
        assert np.abs(pixels(together / name) - pixels(alone / name)).max() <= 1  # float reordering only
        assert np.abs(pixels(together / name) - pixels(const / name)).mean() > 1  # the noise does show
    # walk frames take their grain from their frame number: a resumed walk matches one drawn in one go
    walk = {"keyframes": "0-1", "seconds": 1, "fps": 6}
    whole = run(tmp_path, train_dir, "whole", seeds="0", noise_mode="random", walk=walk, batch=6)
    part = run(tmp_path, train_dir, "part", seeds="0", noise_mode="random", walk=walk, batch=6)
    for name in ("000002.png", "000005.png", "000006.png"):
        (part / "walk" / name).unlink()
    run(tmp_path, train_dir, "part", seeds="0", noise_mode="random", walk=walk, batch=2)
    for frame in sorted((whole / "walk").glob("*.png")):
        assert np.abs(pixels(frame) - pixels(part / "walk" / frame.name)).max() <= 1


def test_grayscale_network_writes_mode_l(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    save_snapshot(folder, make_g(3, img_channels=1), 1000)
    out = run(tmp_path, folder, seeds="0-1", walk={"keyframes": "0-1", "seconds": 1, "fps": 2},
              mixing={"rows": "0", "columns": "1", "layers": "0-1"})
    for p in [*out.glob("seed*.png"), *out.glob("walk/*.png"), out / "mixing.png"]:
        with Image.open(p) as im:
            assert im.mode == "L"


def test_resume_keeps_finished_images(tmp_path, train_dir):
    out = run(tmp_path, train_dir, seeds="0-1")
    marker = out / "seed0000.png"
    stat = marker.stat().st_mtime_ns
    run(tmp_path, train_dir, seeds="0-3")
    assert marker.stat().st_mtime_ns == stat and (out / "seed0003.png").exists()


def test_a_new_network_at_the_same_path_replaces_earlier_images(tmp_path):
    """Resuming keeps only images of the same network file: a new file at the same path starts over."""
    a = save_snapshot(tmp_path / "a", make_g(1), 1000)
    b = save_snapshot(tmp_path / "b", make_g(2), 2000)
    net = tmp_path / "net.safetensors"
    opts = dict(seeds="0-1", snapshot=str(net), walk={"keyframes": "0-1", "seconds": 1, "fps": 2},
                mixing={"rows": "0", "columns": "1"})
    shutil.copy(a, net)
    out = run(tmp_path, None, **opts)
    seeded = tmp_path / "seeded"  # as an earlier version left it, or the engine seeds it: no marker
    shutil.copytree(out, seeded)
    (seeded / ".network.json").unlink()
    shutil.copy(b, net)
    messages = []
    run(tmp_path, None, messages=messages, **opts)
    run(tmp_path, None, "seeded", **opts)
    fresh = run(tmp_path, None, "fresh", **opts)
    assert any("drawn from another network file" in m for m in messages), messages
    for folder in (out, seeded):
        for name in ("seed0000.png", "seed0001.png", "walk/000001.png", "walk/000002.png", "mixing.png"):
            assert (folder / name).read_bytes() == (fresh / name).read_bytes(), (folder, name)
        assert json.loads((folder / "generated.json").read_text())["kimg"] == 2


def test_latest_skips_a_damaged_checkpoint(tmp_path):
    folder = tmp_path / "train"
    save_snapshot(folder, make_g(1), 4000)
    truncate(save_snapshot(folder, make_g(2), 8000))
    messages = []
    latest = run(tmp_path, folder, "latest", messages, seeds="0")
    older = run(tmp_path, folder, "older", seeds="0", snapshot=4)
    assert (latest / "seed0000.png").read_bytes() == (older / "seed0000.png").read_bytes()
    assert any("network-snapshot-000008.safetensors is damaged" in m and "network-snapshot-000004.safetensors "
               "instead" in m for m in messages), messages
    with pytest.raises(CinemlError, match=r"Checkpoint network-snapshot-000008\.safetensors in .* is damaged or "
                                          r"incomplete.*Delete it"):
        run(tmp_path, folder, "eight", seeds="0", snapshot=8)
    truncate(folder / ckpt.checkpoint_name(4000))
    with pytest.raises(CinemlError, match=r"network-snapshot-000004\.safetensors .* is damaged.*No older checkpoint"):
        run(tmp_path, folder, "none", seeds="0")


def test_an_interrupted_training_is_pointed_out(tmp_path):
    staged = Path(".cineml/staging/train-0123456789abcdef")
    save_snapshot(tmp_path / staged, make_g(1), 4000)
    with pytest.raises(CinemlError, match=r"interrupted training left checkpoints in "
                                          rf"{staged}.*-S generate\.snapshot={staged} "):
        run(tmp_path, tmp_path / "train", "x")
    assert (run(tmp_path, tmp_path / "train", "y", seeds="0", snapshot=str(staged)) / "seed0000.png").exists()


# --- Snapshots ------------------------------------------------------------------------------------


def test_snapshot_choices(tmp_path, train_dir):
    latest = run(tmp_path, train_dir, "latest", seeds="1")
    by_kimg = run(tmp_path, train_dir, "kimg", seeds="1", snapshot=4)
    by_text = run(tmp_path, train_dir, "text", seeds="1", snapshot="4")
    by_path = run(tmp_path, train_dir, "path", seeds="1", snapshot=str(train_dir / ckpt.checkpoint_name(4000)))
    assert (by_kimg / "seed0001.png").read_bytes() == (by_path / "seed0001.png").read_bytes() \
        == (by_text / "seed0001.png").read_bytes()
    assert (latest / "seed0001.png").read_bytes() != (by_kimg / "seed0001.png").read_bytes()
    with pytest.raises(CinemlError, match=r"generate\.snapshot = 5.*there are: 4, 8"):
        run(tmp_path, train_dir, "x", snapshot=5)
    with pytest.raises(CinemlError, match="no checkpoint in the training folder"):
        run(tmp_path, tmp_path / "empty", "y")
    with pytest.raises(CinemlError, match="no such file"):
        run(tmp_path, train_dir, "z", snapshot="nope/net.pkl")


def test_imported_pickle_generates_the_same_images(tmp_path):
    G = make_g(5)
    pkl = reference_pickle(tmp_path, G, tiny_discriminator(img_resolution=16))
    out = run(tmp_path, None, seeds="0-2", snapshot=str(pkl), truncation=0.6)
    z = torch.from_numpy(seed_z([0, 1, 2], G.z_dim))
    with torch.no_grad():
        imgs = (G(z, truncation_psi=0.6) * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i in range(3):
        assert np.abs(pixels(out / f"seed{i:04d}.png") - imgs[i]).max() <= 1
    assert json.loads((out / "generated.json").read_text())["format"] == "stylegan2-ada-pytorch pickle"


def test_conditional_network_needs_a_class(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    save_snapshot(folder, make_g(6, c_dim=3), 1000)
    with pytest.raises(CinemlError, match="class_index"):
        run(tmp_path, folder, seeds="0")
    a = run(tmp_path, folder, "a", seeds="0", class_index=0)
    b = run(tmp_path, folder, "b", seeds="0", class_index=2)
    assert not np.array_equal(pixels(a / "seed0000.png"), pixels(b / "seed0000.png"))


# --- Walks and mixing -----------------------------------------------------------------------------


def test_loop_positions_are_periodic():
    pos = loop_positions(4, 10)
    assert pos[0] == (0, 0.0) and len(pos) == 10
    assert all(0 <= u < 1 for _, u in pos) and [k for k, _ in pos] == sorted(k for k, _ in pos)
    # frame 10 (one past the last) lands on keyframe 0 again, and the frames after it repeat the walk
    assert loop_positions(4, 10, [10]) == [(0, 0.0)]
    again = loop_positions(4, 10, range(10, 20))
    assert [k for k, _ in again] == [k for k, _ in pos] and np.allclose([u for _, u in again], [u for _, u in pos])


def test_walk_one_past_the_end_is_frame_zero(train_dir):
    G = ckpt.load_generator(train_dir)
    for space, interp in (("w", "cubic"), ("w", "linear"), ("z", "slerp")):
        spec = WalkSpec([3, 5, 7], 2.5, 4.0, space, interp)  # 10 frames: keyframes fall between frames
        n = spec.frames
        with torch.no_grad():
            ws = walk_ws(G, spec, 0.9, None, None, "cpu")
            past = walk_ws(G, spec, 0.9, None, None, "cpu", [n, n + 1, 2 * n - 1])
        assert ws.shape == (n, G.num_ws, G.w_dim)
        assert torch.allclose(past[0], ws[0], atol=1e-5)  # the frame after the last is frame 0...
        assert torch.allclose(past[1], ws[1], atol=1e-5) and torch.allclose(past[2], ws[-1], atol=1e-5)
        assert not torch.allclose(ws[-1], ws[0], atol=1e-3)  # ...so frame 0 is not repeated at the end


@pytest.mark.parametrize("space,interp", [("w", "cubic"), ("w", "linear"), ("z", "slerp")])
def test_walk_loops_through_its_keyframes(tmp_path, train_dir, space, interp):
    walk = {"keyframes": "3,5,7", "seconds": 3, "fps": 4, "space": space, "interpolation": interp}
    out = run(tmp_path, train_dir, seeds="3,5", truncation=0.9, walk=walk, batch=6)
    frames = sorted((out / "walk").glob("*.png"))
    assert [f.name for f in frames] == [f"{i:06d}.png" for i in range(1, 13)]
    imgs = [pixels(f) for f in frames]
    # frames 1 and 5 are keyframes 3 and 5 exactly (4 frames per key)
    assert np.abs(imgs[0] - pixels(out / "seed0003.png")).max() <= 1
    assert np.abs(imgs[4] - pixels(out / "seed0005.png")).max() <= 1
    # the loop closes: last -> first is a step like any other, far smaller than jumping between keys
    steps = [np.abs(imgs[i + 1] - imgs[i]).mean() for i in range(len(imgs) - 1)]
    closing = np.abs(imgs[0] - imgs[-1]).mean()
    assert closing <= 1.5 * max(steps)
    assert closing < np.abs(imgs[0] - imgs[4]).mean()
    record = json.loads((out / "generated.json").read_text())["walk"]
    assert record["frames"] == 12 and record["space"] == space and record["interpolation"] == interp


def test_walk_latents_close_the_loop_exactly(train_dir):
    G = ckpt.load_generator(train_dir)
    for space, interp in (("w", "cubic"), ("w", "linear"), ("z", "slerp")):
        spec = WalkSpec([0, 1, 2, 3], 2.0, 4.0, space, interp)
        double = WalkSpec([0, 1, 2, 3], 4.0, 4.0, space, interp)
        with torch.no_grad():
            ws, ws2 = walk_ws(G, spec, 1.0, None, None, "cpu"), walk_ws(G, double, 1.0, None, None, "cpu")
        assert ws.shape == (8, G.num_ws, G.w_dim)
        # sampling twice as densely hits every frame of the coarse walk, and frame 0 is where it ends
        assert torch.allclose(ws2[::2], ws, atol=1e-5)
        assert not torch.allclose(ws[0], ws[-1])


def test_mixing_grid_geometry(tmp_path, train_dir):
    out = run(tmp_path, train_dir, seeds="0-2,10-13", mixing={"rows": "0-2", "columns": "10-13", "layers": "0-3"},
              batch=8)
    grid = pixels(out / "mixing.png")
    assert grid.shape == (4 * 16, 5 * 16, 3)
    tile = lambda r, c: grid[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16]  # noqa: E731
    assert (tile(0, 0) == 0).all()
    for j, seed in enumerate((10, 11, 12, 13)):
        assert np.abs(tile(0, j + 1) - pixels(out / f"seed{seed:04d}.png")).max() <= 1
    for i, seed in enumerate((0, 1, 2)):
        assert np.abs(tile(i + 1, 0) - pixels(out / f"seed{seed:04d}.png")).max() <= 1
        for j in range(4):  # mixed cells differ from both sources
            assert np.abs(tile(i + 1, j + 1) - tile(i + 1, 0)).mean() > 0.5
            assert np.abs(tile(i + 1, j + 1) - tile(0, j + 1)).mean() > 0.5
    every = run(tmp_path, train_dir, "all", seeds="0", mixing={"rows": "0", "columns": "10", "layers": "0-5"})
    g = pixels(every / "mixing.png")  # all 6 layers from the column: the cell is the column's image
    assert np.abs(g[16:, 16:] - g[:16, 16:]).max() <= 1
    with pytest.raises(CinemlError, match="has 6 style layers"):
        run(tmp_path, train_dir, "bad", seeds="0", mixing={"rows": "0", "columns": "1", "layers": "0-6"})
    default = run(tmp_path, train_dir, "default", seeds="0", mixing={"rows": "0", "columns": "1"})
    assert json.loads((default / "generated.json").read_text())["mixing"]["layers"] == [0, 1, 2, 3, 4, 5]


# --- CLI ------------------------------------------------------------------------------------------


def _cli():
    """The real ``cineml`` group with this plugin's commands, as ``main()`` builds it."""
    add_commands(cineml.cli.cli)
    return cineml.cli.cli


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(_cli(), ["-q", *[str(a) for a in args]], catch_exceptions=False)
    return result.exit_code, result.output


def test_cli_import_and_export(tmp_path):
    G = make_g(7)
    pkl = reference_pickle(tmp_path, G, tiny_discriminator(img_resolution=16))
    code, text = invoke("import", pkl, "-o", tmp_path / "net.safetensors")
    assert code == 0, text
    assert "stylegan2-ada-pytorch pickle" in text
    before = (tmp_path / "net.safetensors").stat().st_mtime_ns
    code, text = invoke("import", pkl, "-o", tmp_path / "net.safetensors")
    assert code == 1 and "already exists" in text and "--force" in text
    assert (tmp_path / "net.safetensors").stat().st_mtime_ns == before
    code, text = invoke("import", pkl, "-o", tmp_path / "net.safetensors", "--force")
    assert code == 0, text
    G2 = ckpt.load_generator(tmp_path / "net.safetensors")
    z = torch.from_numpy(seed_z([4], G.z_dim))
    with torch.no_grad():
        assert (G2(z) - G(z)).abs().max().item() <= 1e-5
    code, text = invoke("export", tmp_path / "net.safetensors", "-o", tmp_path / "exported")
    assert code == 0, text
    tensors, state = ckpt.load_checkpoint(tmp_path / "exported.safetensors")
    assert {k.split(".")[0] for k in tensors} == {"G", "D", "G_ema"}
    assert json.loads((tmp_path / "exported.json").read_text())["G_kwargs"] == G.init_kwargs
    code, text = invoke("export", tmp_path / "net.safetensors", "-o", tmp_path / "upper.SAFETENSORS")
    assert code == 0 and (tmp_path / "upper.SAFETENSORS").is_file() and (tmp_path / "upper.json").is_file(), text
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")
    code, text = invoke("import", evil)
    assert code == 1 and "refused" in text


def test_cli_generate_keeps_one_offs_apart_from_the_project_output(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    manifest = make_project(root, """
        [project]
        source = "film.mp4"
        [extract]
        use = "fps"
        [train]
        use = "stylegan2"
        [generate]
        use = "stylegan2"
        seeds = "0-1"
        """, files={"film.mp4": b"never decoded: only the generate stage runs"})
    save_snapshot(root / "train", make_g(8), 2000)
    monkeypatch.setattr(cineml.cli, "_registry", _registry_with_generator())
    assert invoke("run", manifest, "--only", "generate")[0] == 0  # the project's own images: seeds 0-1
    own = {p.name: p.read_bytes() for p in (root / "generated").glob("*.png")}
    assert sorted(own) == ["seed0000.png", "seed0001.png"]
    code, text = invoke("generate", manifest, "-S", "generate.seeds=5-7", "--name", "more")
    assert code == 0, text
    assert sorted(p.name for p in (root / "one-offs/more").glob("*.png")) == ["seed0005.png", "seed0006.png",
                                                                              "seed0007.png"]
    assert {p.name: p.read_bytes() for p in (root / "generated").glob("*.png")} == own  # untouched
    assert not (root / "frames").exists()
    code, text = invoke("generate", manifest, "-S", "generate.seeds=9")  # default name: the time and the -S
    assert code == 0, text
    (other,) = [p for p in (root / "one-offs").iterdir() if p.name != "more"]
    assert other.name.endswith("_seeds-9") and (other / "seed0009.png").is_file()
    assert invoke("run", manifest, "--only", "generate")[0] == 0  # up to date: generated/ stays, one-offs stay
    assert json.loads((root / "run.json").read_text())["stages"][2]["ran"] is False
    assert sorted(p.name for p in (root / "one-offs").iterdir()) == sorted(["more", other.name])
    code, text = invoke("generate", manifest, "-S", "generate.seeds=9-x")
    assert code == 1 and "generate.seeds" in text
    (root / "one-offs/mine").mkdir()
    (root / "one-offs/mine/notes.txt").write_text("keep")
    code, text = invoke("generate", manifest, "--name", "mine")
    assert code == 1 and "holds files CineML did not write" in text
    assert (root / "one-offs/mine/notes.txt").read_text() == "keep"


def test_sampling_a_network_file_needs_no_train_stage(tmp_path, monkeypatch):
    """[generate] with a snapshot path samples that network: no [train] table, no film."""
    root = tmp_path / "proj"
    manifest = make_project(root, """
        [generate]
        use = "stylegan2"
        snapshot = "nets/imported.safetensors"
        seeds = "0-1"
        """)
    (root / "nets").mkdir()
    save_snapshot(root / "nets", make_g(3), 4000).rename(root / "nets/imported.safetensors")
    monkeypatch.setattr(cineml.cli, "_registry", _registry_with_generator())
    code, text = invoke("run", manifest)
    assert code == 0, text
    assert sorted(p.name for p in (root / "generated").glob("*.png")) == ["seed0000.png", "seed0001.png"]
    ran = lambda: [(s["stage"], s["ran"], s["reason"]) for s in json.loads((root / "run.json").read_text())["stages"]]
    assert invoke("run", manifest)[0] == 0 and ran() == [("generate", False, "up to date")]
    save_snapshot(root / "nets", make_g(4), 4000).rename(root / "nets/imported.safetensors")  # a new network there
    assert invoke("run", manifest)[0] == 0
    assert ran() == [("generate", True, "changed: the file snapshot names changed")]
    (root / "project.toml").write_text(manifest.read_text().replace('snapshot = "nets/imported.safetensors"\n', ""))
    code, text = invoke("run", manifest)
    assert code == 1 and "needs the [train] stage" in text
