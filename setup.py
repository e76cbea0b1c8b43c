from setuptools import find_packages, setup

packages = find_packages("lib") + ["loopwise.services." + p for p in find_packages("services")]
setup(packages=packages + ["loopwise.services"],
      package_dir={"loopwise": "lib/loopwise", "loopwise.services": "services"})
