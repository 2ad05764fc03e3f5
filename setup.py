from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / 'sparx_mm' / 'version.py').read_text(), version)


def requirements(name):
    lines = (here / 'requirements' / name).read_text().splitlines()
    return [line.split('#')[0].strip() for line in lines if line.split('#')[0].strip()]


setup(
    name='sparx-mm',
    version=version['__version__'],
    description='SparX backbones (SparX-Mamba, SparX-Swin) for mmdet, mmsegmentation and mmpretrain',
    long_description=(here / 'README.md').read_text() if (here / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['sparx_mm', 'sparx_mm.*']),
    # mmcv is deliberately absent: it must be built with its ops against the installed torch (install.sh).
    install_requires=requirements('runtime.txt'),
    extras_require={'tests': requirements('tests.txt')},
    license='Apache-2.0',
)
