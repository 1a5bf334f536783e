from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "osprey_ros"


def data_files() -> list[tuple[str, list[str]]]:
    """ament_python layout: package marker, package.xml, launch and config under share/."""
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ]
    for folder in ("launch", "config"):
        found = sorted(str(p) for p in Path(folder).glob("*") if p.is_file())
        if found:
            files.append((f"share/{PACKAGE}/{folder}", found))
    return files


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Pixel-level region understanding for robots: Osprey in ROS 2",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["osprey_model", "osprey_model.*", "osprey_ros", "osprey_ros.*"]),
    package_data={
        "osprey_model": [
            "checkpoints/tiny-shapes/*",
            "checkpoints/tiny-sam/*",
            "checkpoints/tiny-lisa/*",
            "checkpoints/tiny-lisa/LISA-tiny/*",
            "checkpoints/tiny-lisa/clip-vit-tiny-shapes/*",
        ]
    },
    data_files=data_files(),
    install_requires=[
        "torch>=2.4",
        "open_clip_torch>=3.0",
        "timm>=1.0",
        "transformers>=4.45,<5",
        "safetensors>=0.4",
        "segment-anything>=1.0",
        "numpy>=1.26",
        "pillow>=10",
    ],
    extras_require={"tiny": ["wordllama>=0.4"], "test": ["pytest>=8", "pytest-timeout>=2.3", "ruff"]},
    entry_points={
        "console_scripts": [
            "osprey-describe = osprey_model.cli:main",
            "osprey-segment = osprey_model.lisa.cli:main",
            "osprey-make-tiny = osprey_model.tiny:main",
            "osprey_perception_node = osprey_ros.perception_node:main",
            "synthetic_camera = osprey_ros.synthetic_camera:main",
            "osprey-perception = osprey_ros.launcher:main",
            "osprey-demo = osprey_ros.demo:main",
            "osprey-reason-demo = osprey_ros.reason_demo:main",
            "osprey-bag = osprey_ros.bag_tool:main",
        ]
    },
    zip_safe=False,
)
