"""fastsam2 ROS 2 example package (the node imports rclpy only when it runs)."""
