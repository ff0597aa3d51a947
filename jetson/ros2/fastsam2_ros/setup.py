from glob import glob

from setuptools import setup

package_name = "fastsam2_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=[package_name],
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
    ],
    install_requires=["setuptools", "numpy"],
    zip_safe=True,
    maintainer="fastsam2",
    maintainer_email="fastsam2@example.com",
    description="Example ROS 2 node for fastsam2 SAM2 video tracking",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "fastsam2_node = fastsam2_ros.fastsam2_node:main",
        ],
    },
)
