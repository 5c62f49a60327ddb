"""Compiled packages of nearsight potentials: ``torch.export`` + AOTInductor (``.pt2``), the route
to C++ and LAMMPS (``pair_style nearsight``, repository ``lammps/``) now that TorchScript is
deprecated.

    from nearsight.models.aoti import export_package, load_package
    export_package(model, "model.pt2")                       # float64, CPU
    potential = load_package("model.pt2")                    # checks format, torch, CPU
    e_i, forces, virial, w_i = potential(positions, species, cell, edge_index, shifts, mask)

The package computes, for one structure given with its neighbour list (``CompiledPotential`` adds
the last input),

    inputs:  positions [N, 3] (Å), species [N] (Z, int64), cell [3, 3] (Å, rows),
             edge_index [2, E] (int64; all ordered pairs i ≠ j with r_ij < cutoff, centre first),
             shifts [E, 3] (integer cell shifts as floats: r_ij = R_j − R_i + shifts @ cell),
             mask [N] (bool: the atoms whose energy counts), neighbour_slots [S] (int64, values
             unused: S >= the largest number of edges of one centre, the width of the padded
             neighbour lists of message-passing models), and for a message-passing model of T
             layers layer_centres_0 … layer_centres_{T−1} (int64 index tensors: the atoms each layer
             updates, :mod:`nearsight.models.receptive`; ``CompiledPotential`` passes every atom),
             then layer_chunks_0 … layer_chunks_{T−1} (values unused: lengths k_t >= 2 with
             k_t·S >= len(layer_centres_t), S the metadata's ``chunk_atoms``; layer t runs in k_t
             chunks of S atoms, :mod:`nearsight.models.chunked`)
    outputs: atomic_energies [N] (eV), forces [N, 3] = −∂E/∂R (eV/Å, every atom, masked or not),
             virial [3, 3] = −Σ_e r_e ⊗ ∂E/∂r_e (eV), atomic_virial [N, 3, 3] (half of each edge's
             term to each end),

with E = Σ_{mask} ε_i.  The mask is what makes domain decomposition exact: LAMMPS passes its owned
atoms and their ghosts (a shell of ``interaction_layers`` × cutoff), and only owned atoms' energies
count; the ghost forces are sent back to their owners.  The derivatives are taken once, with respect
to the edge vectors (the model sees nothing else of the geometry), so forces and virial come from
one backward pass that is traced into the package.

Export traces the model with ``make_fx`` (symbolic shapes; the backward pass becomes explicit
operations), exports the graph with dynamic atom and edge counts and compiles it with AOTInductor.
While traced, the models take their shape-static paths (:func:`nearsight.nn.is_tracing`).  The
package holds native code for the CPU's vector instructions it was compiled on and for the torch
that compiled it: both are recorded and checked at load time.
"""

from __future__ import annotations

import json
import os
import platform
import zipfile
from pathlib import Path

import torch
from torch import nn

from .. import __version__, keys
from .chunked import chunk_atoms, layer_chunks

# 2: the neighbour_slots input; 3: layer_centres_<t> of message passing; 4: layer_chunks_<t>
FORMAT = "nearsight-aoti-4"
INPUTS = ("positions", "species", "cell", "edge_index", "shifts", "mask", "neighbour_slots")
OUTPUTS = ("atomic_energies", "forces", "virial", "atomic_virial")
DTYPES = {"float64": torch.float64, "float32": torch.float32}


class PackagedForceField(nn.Module):
    """The function a package holds: per-atom energies, forces and virials of ``model`` (see the
    module docstring for the inputs and outputs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        positions: torch.Tensor,
        species: torch.Tensor,
        cell: torch.Tensor,
        edge_index: torch.Tensor,
        shifts: torch.Tensor,
        mask: torch.Tensor,
        neighbour_slots: torch.Tensor,
        *layer_inputs: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # edges grouped by centre (the descriptors enumerate angular triplets per centre)
        order = torch.argsort(edge_index[0], stable=True)
        edge_index = edge_index.index_select(1, order)
        shifts = shifts.index_select(0, order)
        i, j = edge_index[0], edge_index[1]
        vectors = positions.index_select(0, j) - positions.index_select(0, i) + shifts @ cell
        vectors = vectors.detach().requires_grad_(True)  # [E, 3]
        n = positions.shape[0]
        graph = {
            keys.POSITIONS: positions,
            keys.ATOMIC_NUMBERS: species,
            keys.CELL: cell[None],
            keys.BATCH: torch.zeros(n, dtype=torch.int64, device=positions.device),
            keys.EDGE_INDEX: edge_index,
            keys.CELL_SHIFTS: shifts,
            keys.EDGE_VECTORS: vectors,
            keys.NEIGHBOUR_SLOTS: neighbour_slots,
        }
        layers = len(layer_inputs) // 2  # layer_centres_<t>, then layer_chunks_<t>
        for t in range(layers):
            graph[f"{keys.LAYER_CENTRES}_{t}"] = layer_inputs[t]
            graph[f"{keys.LAYER_CHUNKS}_{t}"] = layer_inputs[layers + t]
        atomic = self.model(graph)[keys.ATOMIC_ENERGIES]  # [N]
        energy = torch.where(mask, atomic, torch.zeros_like(atomic)).sum()
        (g,) = torch.autograd.grad(energy, [vectors])  # ∂E/∂r_e [E, 3]
        forces = torch.zeros_like(positions).index_add(0, i, g).index_add(0, j, -g)
        w = -vectors.detach()[:, :, None] * g[:, None, :]  # [E, 3, 3]
        half = 0.5 * w
        atomic_virial = positions.new_zeros(n, 3, 3).index_add(0, i, half).index_add(0, j, half)
        return atomic.detach(), forces, w.sum(0), atomic_virial


def _check_exportable(model: nn.Module) -> None:
    if getattr(model, "n_states", 1) > 1:
        raise ValueError(
            f"export: a model with n_states = {model.n_states} (a diabatic matrix) has no single energy "
            "to compile; run it from Python (nearsight.calculator, nearsight surface-hop)"
        )
    if getattr(model, "model_type", "") == "longrange":
        parts = [
            name for name in ("coulomb", "dispersion", "repulsion") if getattr(model, name, None) is not None
        ]
        raise ValueError(
            f"export: this model has long-range terms ({', '.join(parts)}) that compiled packages and the "
            "LAMMPS plugin do not compute yet; run it from Python (nearsight.calculator, nearsight md)"
        )
    if getattr(model, "electronic", None) is not None or getattr(model, "electronic_nets", None) is not None:
        raise ValueError(
            "export: this model takes the total charge and spin as inputs (charge_embedding), which a "
            "package has no input for yet; run it from Python (nearsight.calculator)"
        )


def package_inputs(model: nn.Module) -> tuple[str, ...]:
    """The input names of ``model``'s package: :data:`INPUTS`, then, for a message-passing model,
    one ``layer_centres_<t>`` per layer (with one layer: the atoms whose energy counts, so that the
    ghosts LAMMPS adds as neighbours take no update), then one ``layer_chunks_<t>`` per layer."""
    if not hasattr(model, "num_layers"):  # descriptor models: every centre's energy from its edges
        return INPUTS
    layers = range(interaction_layers(model))
    centres = tuple(f"{keys.LAYER_CENTRES}_{t}" for t in layers)
    return INPUTS + centres + tuple(f"{keys.LAYER_CHUNKS}_{t}" for t in layers)


def interaction_layers(model: nn.Module) -> int:
    """How many neighbour shells an atom's energy reaches: 1 for descriptor models, the number of
    message-passing layers for the equivariant model (the ghost shell LAMMPS needs, in cutoffs)."""
    return int(getattr(model, "num_layers", 1))


def _example(model: nn.Module, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """A small periodic structure of the model's elements, for tracing."""
    from ase.build import bulk

    from ..data.neighbours import atoms_to_graph

    atoms = bulk("Cu", "fcc", a=0.55 * float(model.cutoff), cubic=True) * (2, 1, 1)  # 8 atoms
    atoms.rattle(0.05, seed=1)
    species = list(model.species)
    atoms.numbers = [species[k % len(species)] for k in range(len(atoms))]
    g = {k: v.to(device) for k, v in atoms_to_graph(atoms, float(model.cutoff), dtype).items()}
    inputs = graph_inputs(g, dtype)
    slots = neighbour_slots(inputs[3], len(atoms))
    n_layers = (len(package_inputs(model)) - len(INPUTS)) // 2
    centres = [torch.arange(len(atoms) - 1 - t, device=device) for t in range(n_layers)]  # sizes 7, 6, …
    # every dynamic size distinct from every other size (the tracer gives equal sizes one symbol)
    taken = {2, 3, len(atoms), inputs[3].shape[1], slots.shape[0], *(len(c) for c in centres)}
    free = [size for size in range(4, 64) if size not in taken][:n_layers]
    chunks = [torch.zeros(size, dtype=torch.int64, device=device) for size in free]
    return (*inputs, slots, *centres, *chunks)


def graph_inputs(
    graph: dict[str, torch.Tensor], dtype: torch.dtype, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """The inputs a :class:`CompiledPotential` takes, from a one-structure graph
    (:func:`nearsight.data.neighbours.atoms_to_graph`): every atom's energy counts unless ``mask``."""
    positions = graph[keys.POSITIONS]
    if mask is None:
        mask = torch.ones(positions.shape[0], dtype=torch.bool, device=positions.device)
    return (
        positions,
        graph[keys.ATOMIC_NUMBERS],
        graph[keys.CELL][0],
        graph[keys.EDGE_INDEX],
        graph[keys.CELL_SHIFTS].to(dtype),
        torch.as_tensor(mask, device=positions.device),
    )


def neighbour_slots(edge_index: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """The ``neighbour_slots`` input: an int64 tensor as long as the largest number of edges of one
    centre (at least 1); only its length is read."""
    counts = torch.bincount(edge_index[0], minlength=n_atoms)
    width = max(1, int(counts.max()) if counts.numel() else 1)
    return torch.zeros(width, dtype=torch.int64, device=edge_index.device)


def layer_centres_of(edge_index: torch.Tensor, owned: torch.Tensor, layers: int) -> list[torch.Tensor]:
    """The ``keys.LAYER_CENTRES`` inputs for the energies of the ``owned`` atoms (a bool mask) of a
    model of ``layers`` message-passing layers, as the LAMMPS plugin makes them: layer t updates the
    atoms within layers − 1 − t hops (edges) of an owned atom."""
    depth = torch.full(owned.shape, layers, dtype=torch.int64, device=owned.device)
    depth[owned] = 0
    centre, neighbour = edge_index[0], edge_index[1]
    for k in range(layers - 1):
        reached = neighbour[depth[centre] == k]
        depth[reached] = torch.minimum(depth[reached], torch.full_like(reached, k + 1))
    return [(depth <= layers - 1 - t).nonzero()[:, 0] for t in range(layers)]


def cpu_isa(configs: dict) -> tuple[str, str]:
    """The vector instruction set inductor compiles for with ``configs`` on this CPU (``""``: none,
    scalar code) and its compiler flags."""
    from torch._inductor import config
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    with config.patch({k: v for k, v in configs.items() if k.startswith("cpp.")}):
        isa = pick_vec_isa()
    return (str(isa).split()[0], isa.build_arch_flags()) if isa else ("", "")


def compile_options(optimise: bool, threads: int | None = None) -> dict:
    """Inductor options: optimised C++ with the CPU's widest vector instructions, or unoptimised
    scalar code that compiles fast; the generated kernels' thread count read at run time
    (``OMP_NUM_THREADS``, per LAMMPS rank), or fixed to ``threads``."""
    # int32 sort indices: with the default int16 ones inductor's sort assumes (and checks at run
    # time) fewer than 32 767 edges, which LAMMPS's ghost shells exceed at a few hundred atoms
    options: dict = {"cpp.dynamic_threads": threads is None, "triton.decompose_sort_ops": True}
    if threads is not None:
        options["cpp.threads"] = int(threads)
    if not optimise:
        options.update({"aot_inductor.debug_compile": True, "cpp.simdlen": 1})
    from torch._inductor import config

    known = config.get_config_copy()
    return {k: v for k, v in options.items() if k in known}  # (older torch lacks some)


def package_metadata(model: nn.Module, dtype: torch.dtype, device: str, options: dict) -> dict[str, str]:
    isa, flags = cpu_isa(options) if device == "cpu" else ("", "")
    return {
        "format": FORMAT,
        "nearsight_version": __version__,
        "torch_version": torch.__version__,
        "model_type": str(getattr(model, "model_type", type(model).__name__)),
        "species": " ".join(str(int(z)) for z in model.species),
        "cutoff": repr(float(model.cutoff)),
        "interaction_layers": str(interaction_layers(model)),
        "dtype": "float64" if dtype == torch.float64 else "float32",
        "device": device,
        "units": "metal",
        "cpu_isa": isa,
        "cpu_flags": flags,
        "machine": platform.machine(),
        "long_range": "",
        "inputs": ",".join(package_inputs(model)),
        "chunk_atoms": str(chunk_atoms(model)) if hasattr(model, "num_layers") else "",
        "kernel_threads": "runtime"
        if options.get("cpp.dynamic_threads", True)
        else str(options["cpp.threads"]),
        "outputs": ",".join(OUTPUTS),
    }


def export_package(
    model: nn.Module,
    path: str | os.PathLike,
    dtype: torch.dtype | str = torch.float64,
    device: str = "cpu",
    optimise: bool = True,
    threads: int | None = None,
    chunk_atoms: int | None = None,
) -> Path:
    """Compile ``model`` (a per-atom energy model, as from :func:`nearsight.models.io.load_model`)
    into the AOTInductor package ``path`` (``.pt2``) in ``dtype`` on ``device``; returns the path.

    Compiling takes a minute or two (a C++ compiler runs at -O3); ``optimise=False`` compiles
    scalar code at -O0, about three times sooner, that runs several times slower (tests, quick
    checks).  ``threads`` fixes the thread count of the generated kernels (default: read at run
    time, ``OMP_NUM_THREADS``; for message-passing models 1, one per LAMMPS rank; matrix products
    follow ``OMP_NUM_THREADS`` either way); ``chunk_atoms`` the atoms per chunk of their layers
    (default: :func:`nearsight.models.chunked.chunk_atoms`).  The file is written atomically.
    """
    import copy

    from torch.export import Dim
    from torch.fx.experimental.proxy_tensor import make_fx

    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    if dtype not in DTYPES.values():
        raise ValueError(f"export: dtype {dtype} must be float64 or float32")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"export: device {device!r} must be 'cpu' or 'cuda'")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("export: device 'cuda' asked for, but torch sees no CUDA device here")
    _check_exportable(model)
    if threads is not None and threads < 1:
        raise ValueError(f"export: threads = {threads} must be at least 1")
    if threads is None and hasattr(model, "num_layers"):
        # the chunk loop's kernels are small: an OpenMP region around each, sized at run time,
        # cost 15 % of a one-thread evaluation (1536 silicon atoms, 0.46 against 0.39 s)
        threads = 1
    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"export: {path}: the package name must end in .pt2")
    if chunk_atoms is not None and not (hasattr(model, "num_layers") and 1 <= chunk_atoms <= 4096):
        raise ValueError(f"export: chunk_atoms = {chunk_atoms} needs a message-passing model and 1 to 4096")
    wrapper = PackagedForceField(copy.deepcopy(model).to(device=device, dtype=dtype).eval())
    wrapper.model.export_chunk_atoms = chunk_atoms
    for p in wrapper.parameters():
        p.requires_grad_(False)
    args = _example(model, dtype, torch.device(device))
    traced = make_fx(wrapper, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*args)
    n, e, slots = Dim("n_atoms", min=1), Dim("n_edges", min=1), Dim("n_slots", min=1)
    layers = (len(args) - len(INPUTS)) // 2
    centres = [{0: Dim(f"n_centres_{t}", min=1)} for t in range(layers)]
    chunks = [{0: Dim(f"n_chunks_{t}", min=2)} for t in range(layers)]
    dynamic = ({0: n}, {0: n}, None, {1: e}, {0: e}, {0: n}, {0: slots}, *centres, *chunks)
    program = torch.export.export(traced, args, dynamic_shapes=dynamic, strict=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.pt2")
    options = compile_options(optimise, threads)
    torch._inductor.aoti_compile_and_package(
        program,
        package_path=str(tmp),
        inductor_configs={
            **options,
            "aot_inductor.metadata": package_metadata(wrapper.model, dtype, device, options),
        },
    )
    os.replace(tmp, path)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a package (without loading its code); a file that is not a nearsight package
    raises ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such package")
    try:
        with zipfile.ZipFile(path) as z:
            names = [m for m in z.namelist() if m.endswith("metadata.json")]
            meta: dict[str, str] = {}
            for name in names:
                meta.update(json.loads(z.read(name)))
    except (zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not an AOTInductor package ({err})") from err
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not a nearsight package (format {meta.get('format')!r}, expected {FORMAT!r}); "
            "make one with `nearsight export MODEL.pt OUT.pt2`"
        )
    return meta


def check_runnable(meta: dict[str, str], source: str) -> None:
    """Refuse a package compiled by another torch or for vector instructions this CPU lacks."""
    if meta.get("torch_version") != torch.__version__:
        raise ValueError(
            f"{source}: compiled by torch {meta.get('torch_version')}, this is torch {torch.__version__}; "
            "export the model again with this torch"
        )
    if meta.get("device") == "cpu":
        missing = missing_cpu_flags(meta.get("cpu_flags", ""))
        if missing:
            raise ValueError(
                f"{source}: compiled for a CPU with {meta.get('cpu_isa')} ({', '.join(missing)} missing on "
                f"this one, machine {platform.machine()}); export the model again on this machine"
            )


def missing_cpu_flags(flags: str) -> list[str]:
    """The ``-m<feature>`` compiler flags among ``flags`` that this CPU does not report (Linux)."""
    wanted = [
        f[2:].replace("-", "_") for f in flags.split() if f.startswith("-m") and not f.startswith("-march")
    ]
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    have = set()
    for line in text.splitlines():
        if line.startswith("flags") or line.startswith("Features"):
            have.update(line.split(":", 1)[1].split())
            break
    aliases = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16"}  # compiler vs /proc/cpuinfo names
    return [f for f in wanted if f not in have and aliases.get(f, f) not in have]


class CompiledPotential:
    """A loaded package: ``potential(positions, species, cell, edge_index, shifts, mask)`` returns
    ``(atomic_energies, forces, virial, atomic_virial)``; ``metadata`` holds what it records."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        check_runnable(self.metadata, str(self.path))
        self.dtype = DTYPES[self.metadata["dtype"]]
        self.device = torch.device(self.metadata["device"])
        self.cutoff = float(self.metadata["cutoff"])
        self.species = [int(z) for z in self.metadata["species"].split()]
        self.interaction_layers = int(self.metadata["interaction_layers"])
        self._run = torch._inductor.aoti_load_package(str(self.path))

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The outputs for ``positions, species, cell, edge_index, shifts, mask`` and, for a
        message-passing model, optionally its ``layer_centres`` (default: every atom in every layer);
        ``neighbour_slots`` is made here from the edges."""
        names = self.metadata["inputs"].split(",")
        layers = [name for name in names if name.startswith(keys.LAYER_CENTRES)]
        chunk = int(self.metadata.get("chunk_atoms") or 0)
        base = len(INPUTS) - 1
        if len(inputs) not in (base, base + len(layers)):
            wanted = ", ".join(INPUTS[:-1]) + (f" [, {', '.join(layers)}]" if layers else "")
            raise TypeError(f"{self.path}: takes the inputs {wanted}, got {len(inputs)}")
        species = inputs[1]
        known = torch.isin(species, torch.tensor(self.species, device=species.device))
        if not bool(known.all()):
            from ase.data import chemical_symbols

            bad = sorted({chemical_symbols[int(z)] for z in species[~known]})
            have = [chemical_symbols[z] for z in self.species]
            raise ValueError(f"{self.path}: element(s) {bad} not known to the model (species {have})")
        centres = list(inputs[base:])
        if layers and not centres:
            centres = [torch.arange(species.shape[0], device=species.device)] * len(layers)
        chunks = [
            torch.zeros(layer_chunks(len(c), chunk), dtype=torch.int64, device=species.device)
            for c in centres
        ]
        slots = neighbour_slots(inputs[3], species.shape[0])
        return tuple(self._run(*inputs[:base], slots, *centres, *chunks))


def load_package(path: str | os.PathLike) -> CompiledPotential:
    """Load a package written by :func:`export_package` (checks format, torch version and CPU)."""
    return CompiledPotential(path)
