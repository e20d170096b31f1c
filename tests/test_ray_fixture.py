def test_ray_head_is_shared(ray_session):
    @ray_session.remote(num_cpus=1)
    def square(x: int) -> int:
        return x * x

    assert ray_session.get(square.remote(7)) == 49
    assert ray_session.cluster_resources().get("GPU") == 2
