"""Environment sources and the conda → pip translation (tiffin.environments.conda, .sources, .spec): pure, fast.

Azure's own sample conda files (tests/fixtures/conda, verbatim) and its curated environments are translated as
users will hand them to tiffin; an MLflow model saved here gives the python_env.yaml MLflow writes today.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tiffin.assets.curated import known
from tiffin.environments.conda import conda_requirement, pip_lines, pip_specifier, translate
from tiffin.environments.sources import curated_for_image, deployment_environment, mlflow_environment
from tiffin.environments.spec import EnvironmentSpec
from tiffin.errors import SpecError

FIXTURES = Path(__file__).parent / "fixtures" / "conda"
OWN_MINOR = f"{sys.version_info.major}.{sys.version_info.minor}"


def conda(*dependencies: object, **extra: object) -> dict[str, object]:
    return {"name": "env", "channels": ["conda-forge"], "dependencies": list(dependencies), **extra}


# --- the table: names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dependency", "expected"),
    [
        ("pytorch", "torch"),
        ("pytorch-cpu", "torch"),
        ("py-xgboost", "xgboost"),
        ("py-xgboost-gpu=1.7", "xgboost==1.7.*"),
        ("tensorflow-gpu", "tensorflow"),
        ("tensorflow", "tensorflow"),
        ("scikit-learn", "scikit-learn"),
        ("matplotlib-base", "matplotlib"),
        ("py-opencv", "opencv-python"),
        ("msgpack-python", "msgpack"),
        ("python-graphviz", "graphviz"),
        ("librosa", "librosa"),  # a real PyPI name that starts like conda's shared libraries
        ("conda-forge::numpy", "numpy"),
        ("pytorch::pytorch", "torch"),
        ("conda-forge/label/main::pandas", "pandas"),
        ("NumPy", "numpy"),
    ],
)
def test_conda_names_become_pypi_names(dependency: str, expected: str) -> None:
    assert conda_requirement(dependency) == expected


@pytest.mark.parametrize(
    "dependency",
    ["mkl", "mkl-service", "cudatoolkit=11.3", "cudnn", "libgcc-ng", "libstdcxx-ng", "libgfortran", "openssl",
     "pip", "pip=23.0.1", "pip<22.0", "nomkl", "blas=*=openblas", "_libgcc_mutex", "_openmp_mutex=4.5=2_gnu",
     "pytorch-cuda=12.1", "cpuonly", "ca-certificates", "zlib", "ld_impl_linux-64", "cuda-nvcc",
     "python_abi=3.10=*_cp310", "qt-main", "font-ttf-dejavu-sans-mono", "fonts-conda-ecosystem"],
)  # fmt: skip
def test_conda_only_packages_are_skipped(dependency: str) -> None:
    assert conda_requirement(dependency) is None


def test_skipped_packages_are_reported_as_written() -> None:
    spec = translate(conda("python=3.10", "mkl=2023.1", "numpy", "cudatoolkit=11.3", "pip"), source="conda.yaml")
    assert spec.requirements == ("numpy",)
    assert spec.skipped == ("mkl=2023.1", "cudatoolkit=11.3", "pip")


@pytest.mark.parametrize("dependency", ["r-base=4.2", "r-ggplot2", "openjdk=11", "graphviz", "ffmpeg", "pandoc"])
def test_a_package_with_no_pypi_counterpart_is_an_error_naming_it_and_the_fix(dependency: str) -> None:
    with pytest.raises(SpecError) as raised:
        translate(conda("python=3.10", dependency), source="conda_file of deployment 'blue'")
    message = str(raised.value)
    assert message.startswith("conda_file of deployment 'blue': ")
    assert repr(dependency) in message and "no PyPI counterpart" in message
    assert "'- pip:'" in message and "PyPI name" in message


# --- version specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dependency", "expected"),
    [
        ("numpy", "numpy"),
        ("numpy=1.2", "numpy==1.2.*"),  # conda's "=" is fuzzy: 1.2, 1.2.1, ...
        ("numpy=1.23.5", "numpy==1.23.5.*"),
        ("numpy==1.2.3", "numpy==1.2.3"),
        ("numpy=1.2.*", "numpy==1.2.*"),
        ("numpy 1.2.*", "numpy==1.2.*"),
        ("numpy 1.2*", "numpy==1.2.*"),
        ("numpy 1.2.3", "numpy==1.2.3"),  # a bare version in the long form is exact
        ("numpy>=1.2,<2", "numpy>=1.2,<2"),
        ("numpy >= 1.2, < 2", "numpy>=1.2,<2"),
        ("numpy>=1.23,<2.0a0", "numpy>=1.23,<2.0a0"),
        ("numpy!=1.5", "numpy!=1.5"),
        ("numpy~=1.22.0", "numpy~=1.22.0"),
        ("numpy=1.2.3=py38h1234_0", "numpy==1.2.3.*"),  # build string dropped
        ("numpy==1.2.3=py38h1234_0", "numpy==1.2.3"),
        ("numpy 1.2.3 py38h1234_0", "numpy==1.2.3"),
        ("pytorch::pytorch=1.6=*cuda9.2*", "torch==1.6.*"),
        ("numpy[version='>=1.16,<1.20']", "numpy>=1.16,<1.20"),
        ("numpy>=1.2.*", "numpy>=1.2"),
        ("numpy=*", "numpy"),  # any version
        ("numpy=*=py38h1234_0", "numpy"),
        ("numpy *", "numpy"),
    ],
)
def test_version_specs_are_translated(dependency: str, expected: str) -> None:
    assert conda_requirement(dependency) == expected


def test_pip_specifier_alone() -> None:
    assert pip_specifier("") == ""
    assert pip_specifier("=1.2") == "==1.2.*"
    assert pip_specifier(">=1.2,<2") == ">=1.2,<2"


@pytest.mark.parametrize("dependency", ["numpy 1.2|1.4", "numpy=1.0_1"])
def test_a_version_pip_cannot_express_is_an_error_saying_to_move_it_to_pip(dependency: str) -> None:
    with pytest.raises(SpecError, match=r"list it under '- pip:' with a PEP 440 version"):
        conda_requirement(dependency)


# --- python ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dependency", "python"),
    [
        ("python=3.10", "3.10"),
        ("python=3.9.16", "3.9.16"),
        ("python==3.11.4", "3.11.4"),
        ("python 3.12", "3.12"),
        ("python=3.10.4=h12debd9_0", "3.10.4"),
        ("python=3.7.11", "3.7.11"),  # kept as declared: finding the interpreter reports it (3.8 to 3.13 run)
    ],
)
def test_python_pins_the_interpreter(dependency: str, python: str) -> None:
    spec = translate(conda(dependency, "numpy"), source="conda.yaml")
    assert spec.python == python
    assert spec.notes == ()
    assert "python" not in " ".join(spec.requirements + spec.skipped)


@pytest.mark.parametrize(
    ("dependency", "python", "allowed"),
    [
        ("python>=3.8,<3.11", "3.8", "3.8, 3.9, 3.10"),
        ("python>=3.10", "3.10", "3.10, 3.11, 3.12, 3.13"),
        ("python<3.10", "3.8", "3.8, 3.9"),
        ("python=3", "3.8", "3.8, 3.9, 3.10, 3.11, 3.12, 3.13"),
        ("python>=3.6.2,<3.9", "3.8", "3.8"),
    ],
)
def test_a_python_range_picks_its_lowest_supported_minor_and_says_so(
    dependency: str, python: str, allowed: str
) -> None:
    spec = translate(conda(dependency), source="conda.yaml")
    assert spec.python == python
    if "," in allowed:
        (note,) = spec.notes
        assert f"allows Python {allowed}" in note and f"uses {python}, the lowest" in note
    else:
        assert spec.notes == ()


def test_a_python_range_with_no_supported_minor_is_an_error_listing_them() -> None:
    with pytest.raises(SpecError, match=r"allows no Python that tiffin runs environments on \(3\.8, .*3\.13\)"):
        translate(conda("python>=3.14"), source="conda.yaml")


def test_no_python_means_tiffins_own_minor_and_says_so() -> None:
    spec = translate(conda("numpy"), source="conda.yaml")
    assert spec.python is None and spec.python_minor == OWN_MINOR
    assert any("no python version" in note for note in spec.notes)


# --- the pip section -------------------------------------------------------------------------------


def test_the_pip_section_is_kept_verbatim_in_order_without_duplicates() -> None:
    lines = [
        "azureml-inference-server-http==1.4.0",
        "inference-schema[numpy-support]",
        "Joblib >= 1.0 ; python_version >= '3.8'",
        "git+https://github.com/org/repo@v1#egg=repo",
        "--extra-index-url https://download.pytorch.org/whl/cpu",
        "torch==2.1.0+cpu",
        "joblib",
        "joblib",
        "# a comment",
        "",
    ]
    spec = translate(conda("python=3.10", "numpy=1.26", {"pip": lines}), source="conda.yaml")
    assert spec.requirements == (
        "numpy==1.26.*",
        "azureml-inference-server-http==1.4.0",
        "inference-schema[numpy-support]",
        "Joblib >= 1.0 ; python_version >= '3.8'",
        "git+https://github.com/org/repo@v1#egg=repo",
        "--extra-index-url https://download.pytorch.org/whl/cpu",
        "torch==2.1.0+cpu",
        "joblib",
    )


def test_a_requirements_file_named_in_the_pip_section_is_read_in(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "requirements.txt").write_text("scikit-learn==1.2.2  # pinned\n-r sub/more.txt\n")
    (tmp_path / "sub" / "more.txt").write_text("pandas<3\n-c constraints.txt\n-e ./localpkg\n")
    spec = translate(conda("python=3.10", {"pip": ["-r requirements.txt", "joblib"]}), source="c", base_dir=tmp_path)
    assert spec.requirements == (
        "scikit-learn==1.2.2",
        "pandas<3",
        f"-c {tmp_path / 'sub' / 'constraints.txt'}",
        f"-e {tmp_path / 'sub' / 'localpkg'}",
        "joblib",
    )


def test_relative_paths_in_an_inline_conda_mapping_are_an_error_saying_what_to_do() -> None:
    with pytest.raises(SpecError, match=r"given inline; give the conda file as a path"):
        translate(conda({"pip": ["-r requirements.txt"]}), source="c", base_dir=None)


def test_a_missing_requirements_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"'-r nope.txt': .*nope.txt cannot be read"):
        pip_lines(["-r nope.txt"], source="c", base_dir=tmp_path)


def test_requirements_files_including_each_other_are_stopped(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("-r a.txt\n")
    with pytest.raises(SpecError, match="too deeply"):
        pip_lines(["-r a.txt"], source="c", base_dir=tmp_path)


def test_other_pip_options_are_refused_naming_the_kept_ones() -> None:
    with pytest.raises(SpecError, match=r"pip option '--target' .* is not supported .*--extra-index-url"):
        pip_lines(["--target /tmp/x"], source="c", base_dir=None)


@pytest.mark.parametrize(
    ("conda_file", "message"),
    [
        (["numpy"], "a conda file is a YAML mapping"),
        ({"dependencies": "numpy"}, "'dependencies' is a list"),
        ({"dependencies": [{"pip": ["x"], "conda": ["y"]}]}, "the one mapping a conda file's dependencies hold"),
        ({"dependencies": [3]}, "is not a package"),
        ({"dependencies": [{"pip": [["x"]]}]}, "in the pip section is not a requirement"),
        ({"dependencies": ["numpy>>1"]}, "is not a conda package spec|list it under '- pip:'"),
    ],
)
def test_malformed_conda_files_are_errors_saying_what_is_expected(conda_file: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        translate(conda_file, source="conda.yaml")


def test_conda_variables_are_reported_as_not_set() -> None:
    spec = translate(conda("python=3.10", variables={"A": "1"}), source="c")
    assert any("environment_variables" in note for note in spec.notes)


# --- Azure's own files -----------------------------------------------------------------------------


def load_fixture(name: str) -> dict[str, object]:
    return yaml.safe_load((FIXTURES / name).read_text())


@pytest.mark.parametrize(
    ("name", "python", "requirements", "skipped"),
    [
        ("online-model-1.yaml", "3.9",
         ("numpy==1.23.5.*", "scikit-learn==1.2.2.*", "scipy==1.10.1.*", "azureml-inference-server-http==1.4.0",
          "inference-schema[numpy-support]", "joblib"), ("pip=23.0.1",)),
        ("batch-mnist-torch.yaml", "3.12",
         ("torch==1.13.0", "torchvision==0.14.0", "pytorch-lightning", "pandas", "azureml-core",
          "azureml-dataset-runtime[fuse]"), ("pip<22.0",)),
        ("mlflow-sklearn-diabetes.yaml", "3.7.11",
         ("mlflow", "scikit-learn==0.24.1", "cloudpickle==2.0.0", "psutil==5.8.0"), ("pip",)),
        ("mlflow-lightgbm-iris.yaml", "3.7.11",
         ("mlflow", "configparser==3.7.4", "distributed==2021.6.2", "ipython==7.28.0", "lightgbm==3.2.1",
          "matplotlib==3.3.4", "pandas==1.1.5"), ("pip",)),
        ("batch-heart-classifier-mlflow.yaml", "3.12",
         ("mlflow", "cloudpickle==1.6.0", "scikit-learn==1.1.2", "xgboost==1.3.3"), ("pip",)),
        ("triton-densenet-scoring-env.yaml", "3.12",
         ("requests", "pillow", "tritonclient[all]", "gevent", "nltk"), ("pip",)),
    ],
)  # fmt: skip
def test_azures_sample_conda_files(
    name: str, python: str, requirements: tuple[str, ...], skipped: tuple[str, ...]
) -> None:
    spec = translate(load_fixture(name), source=name, base_dir=FIXTURES)
    assert (spec.python, spec.requirements, spec.skipped) == (python, requirements, skipped)


@pytest.mark.parametrize("name", known())
def test_every_curated_environment_translates(name: str) -> None:
    spec = deployment_environment(f"azureml://registries/azureml/environments/{name}/labels/latest", owner="d")
    assert spec is not None and spec.python is not None and spec.requirements
    assert spec.skipped == ("pip",)
    assert all("=" not in line or "==" in line or "~=" in line or ">=" in line for line in spec.requirements)


# --- sources: which environment a deployment runs in -----------------------------------------------


def test_no_environment_and_no_mlflow_model_is_tiffins_own() -> None:
    assert deployment_environment(None, owner="deployment 'blue'") is None
    assert deployment_environment({}, owner="deployment 'blue'") is None


def test_inline_conda_mapping(tmp_path: Path) -> None:
    image = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"
    spec = deployment_environment(
        {"image": image, "conda_file": load_fixture("online-model-1.yaml")}, owner="deployment 'blue'"
    )
    assert spec is not None and spec.python == "3.9" and "scikit-learn==1.2.2.*" in spec.requirements
    assert spec.source == "conda_file of the environment of deployment 'blue'"


def test_conda_file_path_relative_to_the_deployment_yaml(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "conda.yaml").write_text("dependencies:\n- python=3.10\n- pip:\n  - -r reqs.txt\n")
    (tmp_path / "env" / "reqs.txt").write_text("scikit-learn==1.2.2\n")
    spec = deployment_environment(
        {"name": "sk", "conda_file": "env/conda.yaml"}, owner="deployment 'blue'", base_dir=tmp_path
    )
    assert spec is not None and spec.requirements == ("scikit-learn==1.2.2",)
    assert spec.source == f"{tmp_path / 'env' / 'conda.yaml'} (conda_file of environment 'sk' of deployment 'blue')"


def test_a_missing_conda_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"conda.yaml: does not exist; the environment of deployment 'blue' names it"):
        deployment_environment({"conda_file": str(tmp_path / "conda.yaml")}, owner="deployment 'blue'")


def test_a_docker_build_context_needs_a_container_engine() -> None:
    with pytest.raises(SpecError, match=r"build:.*needs a container engine.*give the environment as a conda_file"):
        deployment_environment({"build": {"path": "docker-context"}}, owner="deployment 'blue'")


def test_a_curated_image_alone_is_that_curated_environment() -> None:
    assert curated_for_image("mcr.microsoft.com/azureml/curated/sklearn-1.0:latest") == "sklearn-1.0"
    assert curated_for_image("mcr.microsoft.com/azureml/curated/sklearn-1.0@sha256:abc") == "sklearn-1.0"
    spec = deployment_environment({"image": "mcr.microsoft.com/azureml/curated/sklearn-1.0:12"}, owner="d")
    assert spec is not None and spec.python == "3.9"


def test_an_unknown_image_alone_runs_in_tiffins_own_environment() -> None:
    assert curated_for_image("localhost:5000/mine") is None
    assert deployment_environment({"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04"}, owner="d") is None


def test_a_curated_environment_as_inline_assets_produces_it() -> None:
    from tiffin.assets.curated import curated_environment
    from tiffin.assets.references import parse_reference

    reference = parse_reference("azureml://registries/azureml/environments/sklearn-1.5/labels/latest")
    inlined = curated_environment(reference).as_environment()
    spec = deployment_environment(inlined, owner="deployment 'blue'")
    assert spec is not None and spec.python == "3.10" and spec.skipped == ("pip",)
    assert spec.source == "conda_file of environment 'sklearn-1.5' of deployment 'blue'"


def test_an_unresolved_registered_reference_is_an_error() -> None:
    with pytest.raises(SpecError, match="not resolved"):
        deployment_environment("azureml:my-env:1", owner="deployment 'blue'")


def test_the_deployments_environment_comes_before_the_mlflow_models_own(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "requirements.txt").write_text("xgboost==1.4.2\n")
    spec = deployment_environment(
        {"conda_file": {"dependencies": ["python=3.11", {"pip": ["xgboost==2.0"]}]}}, owner="d", mlflow_model=tmp_path
    )
    assert spec is not None and spec.requirements == ("xgboost==2.0",)


# --- an MLflow model's own environment -------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scikit-learn model saved by MLflow as it saves models today: MLmodel, python_env.yaml, conda.yaml,
    requirements.txt."""
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression

    path = tmp_path_factory.mktemp("mlflow") / "model"
    mlflow.sklearn.save_model(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), str(path))
    return path


def test_an_mlflow_models_python_env_yaml(mlflow_model: Path) -> None:
    python_env = yaml.safe_load((mlflow_model / "python_env.yaml").read_text())
    written = [line.strip() for line in (mlflow_model / "requirements.txt").read_text().splitlines() if line.strip()]
    spec = deployment_environment(None, owner="deployment 'blue'", mlflow_model=mlflow_model)
    assert spec is not None
    assert spec.python == python_env["python"] and spec.python_minor == OWN_MINOR
    assert any(line.startswith("scikit-learn==") for line in spec.requirements)
    assert set(written) <= set(spec.requirements)  # "-r requirements.txt" read in
    assert not any(line.startswith("pip") for line in spec.requirements)
    assert spec.skipped and spec.skipped[0].startswith("pip")
    assert spec.source == f"{mlflow_model / 'python_env.yaml'} (the MLflow model of deployment 'blue')"


def test_an_old_mlflow_model_with_requirements_and_conda_yaml(tmp_path: Path) -> None:
    # Logged by MLflow < 1.26: no python_env.yaml. As `mlflow models serve`: python from conda.yaml, packages
    # from requirements.txt.
    (tmp_path / "MLmodel").write_text("flavors:\n  python_function:\n    env: conda.yaml\n    loader_module: x\n")
    (tmp_path / "conda.yaml").write_text((FIXTURES / "mlflow-lightgbm-iris.yaml").read_text().replace("3.7.11", "3.8"))
    (tmp_path / "requirements.txt").write_text("mlflow\nlightgbm==3.2.1\n")
    spec = mlflow_environment(tmp_path, owner="d")
    assert spec is not None and spec.python == "3.8" and spec.requirements == ("mlflow", "lightgbm==3.2.1")


def test_an_mlflow_model_with_conda_yaml_only(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text("flavors:\n  python_function:\n    env: conda.yaml\n")
    (tmp_path / "conda.yaml").write_text((FIXTURES / "batch-heart-classifier-mlflow.yaml").read_text())
    spec = mlflow_environment(tmp_path, owner="d")
    assert spec is not None and spec.python == "3.12" and "xgboost==1.3.3" in spec.requirements


def test_an_mlflow_model_with_requirements_only_takes_python_from_mlmodel(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text("flavors:\n  python_function:\n    python_version: 3.10.12\n")
    (tmp_path / "requirements.txt").write_text("scikit-learn==1.3.0\n")
    spec = mlflow_environment(tmp_path, owner="d")
    assert spec is not None and (spec.python, spec.requirements) == ("3.10.12", ("scikit-learn==1.3.0",))


def test_an_mlflow_model_with_no_environment_files_runs_in_tiffins_own(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    assert mlflow_environment(tmp_path, owner="d") is None


# --- the key ---------------------------------------------------------------------------------------


def test_equal_environments_share_a_key_and_unequal_ones_do_not() -> None:
    one = EnvironmentSpec("3.10", ("numpy==1.26.*", "Scikit_Learn>=1.2"), ("mkl",), "a")
    same = EnvironmentSpec("3.10.4", ("scikit-learn >= 1.2", "numpy==1.26.*", "numpy==1.26.*"), (), "b")
    assert one.key("0.1.0") == same.key("0.1.0")
    assert len(one.key("0.1.0")) == 64
    assert one.key("0.1.0") != one.key("0.2.0")
    assert one.key("0.1.0") != EnvironmentSpec("3.11", one.requirements).key("0.1.0")
    assert one.key("0.1.0") != EnvironmentSpec("3.10", ("numpy==1.26.*", "scikit-learn>=1.3")).key("0.1.0")
    assert EnvironmentSpec(None, ()).key("0.1.0") == EnvironmentSpec(OWN_MINOR, ()).key("0.1.0")


def test_an_mlflow_model_folder_without_mlmodel_still_reads_its_files(tmp_path: Path) -> None:
    # model.type: mlflow_model names the folder; its MLmodel only says which file names to read.
    (tmp_path / "requirements.txt").write_text("scikit-learn==1.3.0\n")
    spec = mlflow_environment(tmp_path, owner="d")
    assert spec is not None and spec.requirements == ("scikit-learn==1.3.0",)


def test_an_unquoted_python_version_in_python_env_yaml_is_an_error_saying_to_quote_it(tmp_path: Path) -> None:
    # YAML reads python: 3.10 as the number 3.1.
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "python_env.yaml").write_text("python: 3.10\ndependencies:\n- numpy\n")
    expected = r"python_env.yaml \(the MLflow model of d\): python is the number 3.1; quote it: python: '3.10'"
    with pytest.raises(SpecError, match=expected):
        mlflow_environment(tmp_path, owner="d")


def test_a_loaded_deployment_spec_reads_its_conda_file() -> None:
    # The quickstart's deployment, loaded as the CLI loads it: conda_file made absolute, image beside it.
    from tiffin.specs import load_spec

    loaded = load_spec(Path(__file__).parents[1] / "examples" / "quickstart" / "blue-deployment.yml")
    deployment = getattr(loaded, "spec", loaded)
    spec = deployment_environment(deployment.environment, owner="deployment 'blue'")
    assert spec is not None and "scikit-learn" in spec.requirements and spec.skipped == ("pip",)
    assert spec.source.endswith(
        "quickstart/environment/conda.yaml (conda_file of the environment of deployment 'blue')"
    )
