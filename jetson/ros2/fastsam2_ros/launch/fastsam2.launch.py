"""ros2 launch fastsam2_ros fastsam2.launch.py engine_dir:=/data/engines box:="100,80,300,400"

Every node parameter is a launch argument of the same name. Numeric and boolean ones go through
ParameterValue(value_type=...) so that they reach the node as numbers/booleans, not strings.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

ARGS = {
    # name: (default, type, description)
    "image_topic": ("/camera/image_raw", str, "input sensor_msgs/Image topic (rgb8/bgr8)"),
    "engine_dir": ("", str, "build_engines.py output (trt) or ONNX export (ort)"),
    "backend": ("trt", str, "trt or ort"),
    "keep_ratio": ("1.0", float, "fraction of tokens through memory attention (< 1 needs the router)"),
    "router_weights": ("", str, "router .safetensors (optional)"),
    "text": ("", str, "object description for the router's text cue"),
    "texts_file": ("", str, "text embeddings .npz from `fastsam2-export text`"),
    "box": ("", str, "initial box x0,y0,x1,y1 in frame pixels"),
    "point": ("", str, "initial positive click x,y in frame pixels"),
    "obj_id": ("1", int, "id of the initial object (its value in the mask)"),
    "publish_overlay": ("true", bool, "also publish ~/overlay"),
    "cuda_graphs": ("false", bool, "trt: replay CUDA graphs per shape bucket"),
    "log_every": ("30", int, "log latency every N frames"),
}


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=desc)
                for name, (default, _, desc) in ARGS.items()]
    params = {name: ParameterValue(LaunchConfiguration(name), value_type=kind)
              for name, (_, kind, _) in ARGS.items()}
    node = Node(
        package="fastsam2_ros",
        executable="fastsam2_node",
        name="fastsam2",
        output="screen",
        parameters=[params],
    )
    return LaunchDescription([*declared, node])
